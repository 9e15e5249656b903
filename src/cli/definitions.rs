//! `warren definitions export|import`: the topology (exchanges, queues, bindings) as one
//! JSON document, to back it up or to set up another server (admin commands
//! `definitions.export` and `definitions.import`). Messages are not included.
//!
//! Import checks the whole file against what exists before changing anything: a conflict
//! (a queue that exists with other attributes, say) fails the import with nothing created.
//! Importing the same file twice changes nothing the second time.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_protocol::{FieldTable, FieldValue};

use crate::admin_types::{Definitions, ImportSummary};
use crate::cli::output::{emit, pretty_json};
use crate::cli::{admin_args, count, decode, Global};

/// `warren definitions ...`
#[derive(Debug, Subcommand)]
pub enum DefinitionsCommand {
    /// Write the exchanges, queues and bindings as pretty JSON to FILE, or to stdout.
    Export(DefinitionsExportArgs),
    /// Declare what a definitions file describes and print what was created.
    Import(DefinitionsImportArgs),
}

/// Arguments of `warren definitions export`.
#[derive(Debug, Args)]
pub struct DefinitionsExportArgs {
    /// File to write (replaced if it exists); stdout when omitted.
    pub file: Option<PathBuf>,
}

/// Arguments of `warren definitions import`.
#[derive(Debug, Args)]
pub struct DefinitionsImportArgs {
    /// A file written by `warren definitions export`.
    pub file: PathBuf,
}

/// Runs a definitions command.
///
/// # Errors
/// Connecting failed, the file could not be read or written, or the server refused the
/// import (invalid JSON, a conflict with what exists), with the file in the context.
pub async fn run(command: DefinitionsCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        DefinitionsCommand::Export(args) => {
            let definitions = global
                .server
                .admin("definitions.export", FieldTable::new(), || {
                    "exporting definitions".to_owned()
                })
                .await?;
            // The file is the server's JSON as-is: it keeps fields this version does not know.
            let text = format!("{}\n", pretty_json(&definitions));
            match &args.file {
                None => emit(&text),
                Some(path) => {
                    let typed: Definitions = decode("definitions.export", &definitions)?;
                    std::fs::write(path, text)
                        .with_context(|| format!("writing definitions to '{}'", path.display()))?;
                    global.done(&export_line(&typed, path))
                }
            }
        }
        DefinitionsCommand::Import(args) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading definitions from '{}'", args.file.display()))?;
            let arguments = admin_args([("definitions", Some(FieldValue::String(text)))]);
            let result: ImportSummary = global
                .server
                .admin_typed("definitions.import", arguments, || {
                    format!("importing definitions from '{}'", args.file.display())
                })
                .await?;
            // Said even with --quiet: the import did something other than asked.
            for warning in &result.warnings {
                eprintln!("warning: {warning}");
            }
            global.done(&format!(
                "definitions imported from '{}': {}",
                args.file.display(),
                import_line(&result)
            ))
        }
    }
}

/// `definitions exported to 'defs.json': 2 exchanges, 3 queues and 4 bindings`.
fn export_line(definitions: &Definitions, path: &std::path::Path) -> String {
    let len = |n: usize, noun: &str| count(u64::try_from(n).unwrap_or(u64::MAX), noun);
    format!(
        "definitions exported to '{}': {}, {} and {}",
        path.display(),
        len(definitions.exchanges.len(), "exchange"),
        len(definitions.queues.len(), "queue"),
        len(definitions.bindings.len(), "binding")
    )
}

/// `created 1 exchange and 2 queues; 3 bindings in place`: exchanges and queues
/// that did not exist before, and the file's bindings (declaring an existing binding is a
/// no-op).
pub fn import_line(result: &ImportSummary) -> String {
    let mut line = format!(
        "created {} and {}; {} in place",
        count(result.exchanges_created, "exchange"),
        count(result.queues_created, "queue"),
        count(result.bindings, "binding")
    );
    // Only when the file had any: older files (and most imports) have none.
    if result.users_created + result.vhosts_created + result.permissions_set > 0 {
        line.push_str(&format!(
            "; created {} and {}; {} set",
            count(result.users_created, "user"),
            count(result.vhosts_created, "vhost"),
            count(result.permissions_set, "permission")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn import_and_export_summaries() {
        assert_eq!(
            import_line(&ImportSummary {
                exchanges_created: 1,
                queues_created: 2,
                bindings: 3,
                users_created: 0,
                vhosts_created: 0,
                permissions_set: 0,
                warnings: vec![],
            }),
            "created 1 exchange and 2 queues; 3 bindings in place"
        );
        let exchange = json!({"name": "x", "type": "direct", "durable": true, "arguments": {}});
        let queue = json!({"name": "q", "durable": true, "auto_delete": false, "arguments": {}});
        let definitions = decode(
            "definitions.export",
            &json!({"warren_version": "0.1.0", "exchanges": [exchange],
                    "queues": [queue.clone(), queue], "bindings": []}),
        )
        .unwrap();
        assert_eq!(
            export_line(&definitions, std::path::Path::new("defs.json")),
            "definitions exported to 'defs.json': 1 exchange, 2 queues and 0 bindings"
        );
    }
}
