//! `warren exchange declare|delete|list`.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use warren_protocol::{FieldTable, FieldValue};

use crate::admin_types::ExchangeInfo;
use crate::cli::field::{field_table, parse_plain_arg, VALUE_NAME};
use crate::cli::output::{arguments_cell, emit, exchange_name, print_json, yes_no, Align, Table};
use crate::cli::{decode, Global, PagedListArgs};
use crate::client::{ExchangeKind, ExchangeOptions};

/// `warren exchange ...`
#[derive(Debug, Subcommand)]
pub enum ExchangeCommand {
    /// Declare an exchange (succeeds if it exists with the same attributes).
    Declare(ExchangeDeclareArgs),
    /// Delete an exchange and its bindings.
    Delete(ExchangeDeleteArgs),
    /// List exchanges, the built-in ones included.
    List(PagedListArgs),
}

/// Arguments of `warren exchange declare`.
#[derive(Debug, Args)]
pub struct ExchangeDeclareArgs {
    /// Exchange name.
    pub name: String,
    /// How the exchange routes.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: KindArg,
    /// Keep the exchange across server restarts.
    #[arg(long)]
    pub durable: bool,
    /// Delete the exchange when its last binding (as a source) is removed; an exchange that
    /// never had a binding stays.
    #[arg(long)]
    pub auto_delete: bool,
    /// Refuse publishes to the exchange: it is reached only through exchange-to-exchange
    /// bindings, as an alternate or as a dead-letter exchange.
    #[arg(long)]
    pub internal: bool,
    /// An exchange argument, KEY=VALUE or KEY:TYPE=VALUE (repeatable); kept with the
    /// exchange and shown by `exchange list`.
    ///
    /// VALUE is a string unless TYPE says otherwise: string, int (or i64), i8, u8, i16,
    /// u16, i32, u32, u64, float (or f64), f32, decimal (`12.34`), timestamp (epoch
    /// seconds or RFC 3339: `at:timestamp=2026-11-30T12:00:00Z`, offsets as `+01:00`), void
    /// (no value: `k:void=`), bool, bytes (base64), list (a JSON array) or table (a JSON
    /// object), e.g. `n:int=5`, `ok:bool=true`, `raw:bytes=AAEC`, `tags:list='["a",1]'`, `meta:table='{"k":1}'`.
    #[arg(long = "arg", value_name = VALUE_NAME, value_parser = parse_plain_arg)]
    pub args: Vec<(String, FieldValue)>,
}

/// Arguments of `warren exchange delete`.
#[derive(Debug, Args)]
pub struct ExchangeDeleteArgs {
    /// Exchange name.
    pub name: String,
    /// Refuse if the exchange still has bindings.
    #[arg(long)]
    pub if_unused: bool,
}

/// `--type` values: the exchange kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Routing key equals the binding key.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Message headers against binding arguments.
    Headers,
}

impl From<KindArg> for ExchangeKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Direct => ExchangeKind::Direct,
            KindArg::Fanout => ExchangeKind::Fanout,
            KindArg::Topic => ExchangeKind::Topic,
            KindArg::Headers => ExchangeKind::Headers,
        }
    }
}

/// Runs an exchange command.
///
/// # Errors
/// Connecting failed or the server refused, with the exchange's name in the context.
pub async fn run(command: ExchangeCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        ExchangeCommand::Declare(args) => {
            let client = global.server.connect().await?;
            let options = ExchangeOptions {
                durable: args.durable,
                auto_delete: args.auto_delete,
                internal: args.internal,
                arguments: field_table(args.args),
                ..ExchangeOptions::default()
            };
            client
                .declare_exchange(&args.name, args.kind.into(), options)
                .await
                .with_context(|| format!("declaring exchange '{}'", args.name))?;
            client.close().await?;
            let kind = args
                .kind
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            let flags: String = [
                (args.durable, ", durable"),
                (args.auto_delete, ", auto-delete"),
                (args.internal, ", internal"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, text)| *text)
            .collect();
            global.done(&format!(
                "exchange '{}' declared ({kind}{flags})",
                args.name
            ))?;
        }
        ExchangeCommand::Delete(args) => {
            let client = global.server.connect().await?;
            client
                .delete_exchange(&args.name, args.if_unused)
                .await
                .with_context(|| format!("deleting exchange '{}'", args.name))?;
            client.close().await?;
            global.done(&format!("exchange '{}' deleted", args.name))?;
        }
        ExchangeCommand::List(args) => {
            let exchanges = global
                .server
                .admin_list::<ExchangeInfo>("exchange.list", FieldTable::new(), &args, || {
                    "listing exchanges".to_owned()
                })
                .await?;
            if args.list.json {
                print_json(&exchanges)?;
            } else {
                emit(&exchange_table(&decode::<Vec<ExchangeInfo>>(
                    "exchange.list",
                    &exchanges,
                )?))?;
            }
        }
    }
    Ok(())
}

/// `exchange.list` as a table: name (`(default)` for ""), type, durable, auto-delete,
/// internal, built-in, arguments.
pub fn exchange_table(exchanges: &[ExchangeInfo]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("TYPE", Align::Left),
        ("DURABLE", Align::Left),
        ("AUTO_DELETE", Align::Left),
        ("INTERNAL", Align::Left),
        ("BUILTIN", Align::Left),
        ("ARGUMENTS", Align::Left),
    ]);
    for e in exchanges {
        table.row(vec![
            exchange_name(&e.name),
            e.kind.clone(),
            yes_no(e.durable),
            yes_no(e.auto_delete),
            yes_no(e.internal),
            yes_no(e.builtin),
            arguments_cell(&e.arguments),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_exchange_is_named_and_arguments_are_pairs() {
        let exchanges = decode::<Vec<ExchangeInfo>>(
            "exchange.list",
            &json!([
                {"name": "", "type": "direct", "durable": true, "builtin": true, "arguments": {}},
                {"name": "logs", "type": "topic", "durable": false, "internal": true,
                 "builtin": false, "arguments": {"alternate-exchange": "ae"}},
            ]),
        )
        .unwrap();
        let text = exchange_table(&exchanges);
        assert_eq!(
            text,
            "NAME       TYPE    DURABLE  AUTO_DELETE  INTERNAL  BUILTIN  ARGUMENTS\n\
             (default)  direct  yes      no           no        yes      -\n\
             logs       topic   no       no           yes       no       alternate-exchange=ae\n"
        );
    }
}
