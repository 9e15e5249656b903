//! `warren bind` and `warren unbind`, which change bindings, and `warren binding list`.

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::BindingInfo;
use crate::cli::field::{field_table, parse_plain_arg, VALUE_NAME};
use crate::cli::output::{arguments_cell, emit, exchange_name, print_json, Align, Table};
use crate::cli::{admin_args, decode, Global, PagedListArgs};

/// Arguments of `warren bind` and `warren unbind`.
#[derive(Debug, Args)]
pub struct BindArgs {
    /// Destination queue; with `--destination-exchange`, the source exchange instead.
    pub queue: String,
    /// Source exchange (left out with `--destination-exchange`).
    #[arg(required_unless_present = "destination_exchange")]
    pub exchange: Option<String>,
    /// Bind this exchange, not a queue, to the source exchange named by the one positional
    /// argument: `warren bind --destination-exchange DEST SOURCE --key K`.
    #[arg(long, value_name = "EXCHANGE", conflicts_with = "exchange")]
    pub destination_exchange: Option<String>,
    /// Binding key (a pattern with `*` and `#` for topic exchanges).
    #[arg(long, value_name = "KEY", default_value = "")]
    pub key: String,
    /// A binding argument, KEY=VALUE or KEY:TYPE=VALUE, e.g. `x-match=all` for headers
    /// exchanges (repeatable).
    ///
    /// VALUE is a string unless TYPE says otherwise: string, int (or i64), i8, u8, i16,
    /// u16, i32, u32, u64, float (or f64), f32, decimal (`12.34`), timestamp (epoch
    /// seconds or RFC 3339: `at:timestamp=2026-11-30T12:00:00Z`, offsets as `+01:00`), void
    /// (no value: `k:void=`), bool, bytes (base64), list (a JSON array) or table (a JSON
    /// object), e.g. `n:int=5`, `ok:bool=true`, `raw:bytes=AAEC`, `tags:list='["a",1]'`, `meta:table='{"k":1}'`.
    /// A headers exchange matches values with their types (integers of any width by
    /// value; `true` is not `"true"`); a void value matches any value of the header.
    #[arg(long = "arg", value_name = VALUE_NAME, value_parser = parse_plain_arg)]
    pub args: Vec<(String, FieldValue)>,
}

/// Which of the two commands runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `warren bind`
    Bind,
    /// `warren unbind`
    Unbind,
}

/// Binds or unbinds.
///
/// # Errors
/// Connecting failed or the server refused, with queue, exchange and key in the context.
pub async fn run(args: BindArgs, action: Action, global: &Global) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    let arguments = field_table(args.args);
    // With `--destination-exchange`, the one positional argument is the source exchange.
    let (kind, destination, source) = match (&args.destination_exchange, &args.exchange) {
        (Some(dest), _) => ("exchange", dest.as_str(), args.queue.as_str()),
        (None, Some(exchange)) => ("queue", args.queue.as_str(), exchange.as_str()),
        (None, None) => anyhow::bail!("a source exchange is required"),
    };
    let to_exchange = kind == "exchange";
    let result = match (action, to_exchange) {
        (Action::Bind, false) => client.bind(destination, source, &args.key, arguments).await,
        (Action::Unbind, false) => {
            client
                .unbind(destination, source, &args.key, arguments)
                .await
        }
        (Action::Bind, true) => {
            client
                .bind_exchange(destination, source, &args.key, arguments)
                .await
        }
        (Action::Unbind, true) => {
            client
                .unbind_exchange(destination, source, &args.key, arguments)
                .await
        }
    };
    result.with_context(|| {
        let verb = match action {
            Action::Bind => "binding",
            Action::Unbind => "unbinding",
        };
        format!(
            "{verb} {kind} '{destination}' and exchange '{source}' with key '{}'",
            args.key
        )
    })?;
    client.close().await?;
    let (done, preposition) = match action {
        Action::Bind => ("bound", "to"),
        Action::Unbind => ("unbound", "from"),
    };
    global.done(&format!(
        "{done} {kind} '{destination}' {preposition} exchange '{source}' with key '{}'",
        args.key
    ))
}

/// `warren binding ...`
#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// List bindings, all or those of one queue or one exchange.
    List(BindingListArgs),
}

/// Arguments of `warren binding list`.
#[derive(Debug, Args)]
pub struct BindingListArgs {
    /// Only the bindings to this queue.
    #[arg(long, value_name = "QUEUE", conflicts_with = "exchange")]
    pub queue: Option<String>,
    /// Only the bindings from this exchange ("" is the default exchange).
    #[arg(long, value_name = "EXCHANGE")]
    pub exchange: Option<String>,
    /// `--json` and the page.
    #[command(flatten)]
    pub list: PagedListArgs,
}

/// Runs `warren binding list`.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run_list(command: BindingCommand, global: &Global) -> anyhow::Result<()> {
    let BindingCommand::List(args) = command;
    let arguments = admin_args([
        ("queue", args.queue.clone().map(FieldValue::String)),
        ("exchange", args.exchange.clone().map(FieldValue::String)),
    ]);
    let bindings = global
        .server
        .admin_list::<BindingInfo>("binding.list", arguments, &args.list, || {
            "listing bindings".to_owned()
        })
        .await?;
    if args.list.list.json {
        print_json(&bindings)
    } else {
        emit(&binding_table(&decode::<Vec<BindingInfo>>(
            "binding.list",
            &bindings,
        )?))
    }
}

/// `binding.list` as a table: source exchange, destination queue, routing key, arguments.
pub fn binding_table(bindings: &[BindingInfo]) -> String {
    let mut table = Table::new(&[
        ("SOURCE", Align::Left),
        ("DESTINATION", Align::Left),
        ("ROUTING KEY", Align::Left),
        ("ARGUMENTS", Align::Left),
    ]);
    for b in bindings {
        table.row(vec![
            exchange_name(&b.source),
            b.destination.clone(),
            b.routing_key.clone(),
            arguments_cell(&b.arguments),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_print_one_row_each() {
        let bindings = decode::<Vec<BindingInfo>>(
            "binding.list",
            &json!([
                {"source": "logs", "destination": "errors", "destination_type": "queue",
                 "routing_key": "*.error", "arguments": {}},
                {"source": "h", "destination": "q", "destination_type": "queue",
                 "routing_key": "", "arguments": {"x-match": "all"}},
            ]),
        )
        .unwrap();
        let text = binding_table(&bindings);
        assert_eq!(
            text,
            "SOURCE  DESTINATION  ROUTING KEY  ARGUMENTS\n\
             logs    errors       *.error      -\n\
             h       q                         x-match=all\n"
        );
    }
}
