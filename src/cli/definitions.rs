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
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use crate::cli::output::{emit, pretty_json};
use crate::cli::{admin_args, reply_count, Global};

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
            let text = format!("{}\n", pretty_json(&definitions));
            match &args.file {
                None => emit(&text),
                Some(path) => {
                    std::fs::write(path, text)
                        .with_context(|| format!("writing definitions to '{}'", path.display()))?;
                    emit(&format!("{}\n", export_line(&definitions, path)))
                }
            }
        }
        DefinitionsCommand::Import(args) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading definitions from '{}'", args.file.display()))?;
            let arguments = admin_args([("definitions", Some(FieldValue::String(text)))]);
            let result = global
                .server
                .admin("definitions.import", arguments, || {
                    format!("importing definitions from '{}'", args.file.display())
                })
                .await?;
            emit(&format!("{}\n", import_line(&result)?))
        }
    }
}

/// `exported 2 exchange(s), 3 queue(s) and 4 binding(s) to 'defs.json'`.
fn export_line(definitions: &Value, path: &std::path::Path) -> String {
    let len = |key: &str| definitions[key].as_array().map_or(0, Vec::len);
    format!(
        "exported {} exchange(s), {} queue(s) and {} binding(s) to '{}'",
        len("exchanges"),
        len("queues"),
        len("bindings"),
        path.display()
    )
}

/// `created 1 exchange(s) and 2 queue(s); 3 binding(s) in place`: exchanges and queues
/// that did not exist before, and the file's bindings (declaring an existing binding is a
/// no-op).
///
/// # Errors
/// The reply lacks one of the counts.
pub fn import_line(result: &Value) -> anyhow::Result<String> {
    Ok(format!(
        "created {} exchange(s) and {} queue(s); {} binding(s) in place",
        reply_count(result, "exchanges_created")?,
        reply_count(result, "queues_created")?,
        reply_count(result, "bindings")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn import_and_export_summaries() {
        assert_eq!(
            import_line(&json!({"exchanges_created": 1, "queues_created": 2, "bindings": 3}))
                .unwrap(),
            "created 1 exchange(s) and 2 queue(s); 3 binding(s) in place"
        );
        assert_eq!(
            export_line(
                &json!({"exchanges": [{}], "queues": [{}, {}], "bindings": []}),
                std::path::Path::new("defs.json")
            ),
            "exported 1 exchange(s), 2 queue(s) and 0 binding(s) to 'defs.json'"
        );
    }
}
