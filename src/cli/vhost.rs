//! `warren vhost add|delete|list`: virtual hosts (administrators only;
//! docs/access-control.md).

use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::VhostInfo;
use crate::cli::output::{emit, print_json, Align, Table};
use crate::cli::{admin_args, decode, Global, PagedListArgs};

/// `warren vhost ...`
#[derive(Debug, Subcommand)]
pub enum VhostCommand {
    /// Add a virtual host, with only the built-in exchanges. Nobody may open it until
    /// `warren permission set USER --vhost NAME` says so.
    Add(VhostNameArgs),
    /// Delete a virtual host and everything in it: exchanges, queues and their messages,
    /// bindings, permissions.
    Delete(VhostNameArgs),
    /// List virtual hosts.
    List(PagedListArgs),
}

/// A virtual host name.
#[derive(Debug, Args)]
pub struct VhostNameArgs {
    /// Virtual host name.
    // Its own id: `vhost` is the global --vhost (the one the connection opens).
    #[arg(id = "vhost_name", value_name = "NAME")]
    pub name: String,
}

/// Runs a vhost command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: VhostCommand, global: &Global) -> anyhow::Result<()> {
    let name_arg = |n: &str| admin_args([("name", Some(FieldValue::String(n.to_owned())))]);
    match command {
        VhostCommand::Add(args) => {
            global
                .server
                .admin("vhost.add", name_arg(&args.name), || {
                    format!("adding vhost '{}'", args.name)
                })
                .await?;
            global.done(&format!("vhost '{}' added", args.name))
        }
        VhostCommand::Delete(args) => {
            global
                .server
                .admin("vhost.delete", name_arg(&args.name), || {
                    format!("deleting vhost '{}'", args.name)
                })
                .await?;
            global.done(&format!("vhost '{}' deleted", args.name))
        }
        VhostCommand::List(args) => {
            let vhosts = global
                .server
                .admin_list::<VhostInfo>("vhost.list", admin_args([]), &args, || {
                    "listing vhosts".to_owned()
                })
                .await?;
            if args.list.json {
                print_json(&vhosts)
            } else {
                emit(&vhost_table(&decode::<Vec<VhostInfo>>(
                    "vhost.list",
                    &vhosts,
                )?))
            }
        }
    }
}

/// `vhost.list` as a table: name and queue count.
pub fn vhost_table(vhosts: &[VhostInfo]) -> String {
    let mut table = Table::new(&[("NAME", Align::Left), ("QUEUES", Align::Right)]);
    for v in vhosts {
        table.row(vec![v.name.clone(), v.queues.to_string()]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhosts_show_their_queue_counts() {
        let text = vhost_table(&[
            VhostInfo {
                name: "/".into(),
                queues: 2,
            },
            VhostInfo {
                name: "prod".into(),
                queues: 0,
            },
        ]);
        assert_eq!(text, "NAME  QUEUES\n/          2\nprod       0\n");
    }
}
