//! `warren bind` and `warren unbind`.

use anyhow::Context;
use clap::Args;
use warren_protocol::FieldValue;

use crate::cli::{field_table, parse_key_value, ServerArg};

/// Arguments of `warren bind` and `warren unbind`.
#[derive(Debug, Args)]
pub struct BindArgs {
    /// Destination queue.
    pub queue: String,
    /// Source exchange.
    pub exchange: String,
    /// Binding key (a pattern with `*` and `#` for topic exchanges).
    #[arg(long, value_name = "KEY", default_value = "")]
    pub key: String,
    /// A binding argument, e.g. `x-match=all` for headers exchanges (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub args: Vec<(String, FieldValue)>,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
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
pub async fn run(args: BindArgs, action: Action) -> anyhow::Result<()> {
    let client = args.server.connect().await?;
    let arguments = field_table(args.args);
    let result = match action {
        Action::Bind => {
            client
                .bind(&args.queue, &args.exchange, &args.key, arguments)
                .await
        }
        Action::Unbind => {
            client
                .unbind(&args.queue, &args.exchange, &args.key, arguments)
                .await
        }
    };
    result.with_context(|| {
        let verb = match action {
            Action::Bind => "binding",
            Action::Unbind => "unbinding",
        };
        format!(
            "{verb} queue '{}' and exchange '{}' with key '{}'",
            args.queue, args.exchange, args.key
        )
    })?;
    client.close().await?;
    Ok(())
}
