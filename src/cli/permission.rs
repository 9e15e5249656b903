//! `warren permission set|clear|list`: what users may do in virtual hosts (administrators
//! only; docs/access-control.md). The virtual host is the global `--vhost`; the connection
//! itself opens `/`.

use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::PermissionInfo;
use crate::cli::output::{emit, print_json, Align, Table};
use crate::cli::{admin_args, decode, Global, PagedListArgs};

/// `warren permission ...`
#[derive(Debug, Subcommand)]
pub enum PermissionCommand {
    /// Set what a user may do in the virtual host given by --vhost (default `/`), replacing
    /// what it could before.
    Set(PermissionSetArgs),
    /// Remove a user's permissions in the virtual host given by --vhost: it can no longer
    /// open it.
    Clear(PermissionUserArgs),
    /// List permissions (those in --vhost when it is given).
    List(PermissionListArgs),
}

/// Arguments of `warren permission set`. Each pattern is a regular expression over
/// resource names; an empty one matches nothing; `.*` matches everything.
#[derive(Debug, Args)]
pub struct PermissionSetArgs {
    /// User name.
    // Its own id: `user` is the global --user (who logs in), and clap would merge the two.
    #[arg(id = "target_user", value_name = "USER")]
    pub user: String,
    /// Queues and exchanges the user may declare and delete.
    #[arg(long, value_name = "REGEX", default_value = "")]
    pub configure: String,
    /// Exchanges the user may publish to, queues it may bind.
    #[arg(long, value_name = "REGEX", default_value = "")]
    pub write: String,
    /// Queues the user may consume from, get from and purge, exchanges it may bind from.
    #[arg(long, value_name = "REGEX", default_value = "")]
    pub read: String,
}

/// A user name.
#[derive(Debug, Args)]
pub struct PermissionUserArgs {
    /// User name.
    // Its own id: `user` is the global --user (who logs in), and clap would merge the two.
    #[arg(id = "target_user", value_name = "USER")]
    pub user: String,
}

/// Arguments of `warren permission list`.
#[derive(Debug, Args)]
pub struct PermissionListArgs {
    /// Only this user's permissions.
    #[arg(long = "of", value_name = "USER")]
    pub of: Option<String>,
    /// The listing options.
    #[command(flatten)]
    pub list: PagedListArgs,
}

/// Runs a permission command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: PermissionCommand, global: &Global) -> anyhow::Result<()> {
    let text = |s: &str| Some(FieldValue::String(s.to_owned()));
    let vhost = global.vhost_given.clone().unwrap_or_else(|| "/".to_owned());
    match command {
        PermissionCommand::Set(args) => {
            let arguments = admin_args([
                ("user", text(&args.user)),
                ("vhost", text(&vhost)),
                ("configure", text(&args.configure)),
                ("write", text(&args.write)),
                ("read", text(&args.read)),
            ]);
            global
                .server
                .admin("permission.set", arguments, || {
                    format!("setting the permissions of '{}' on '{vhost}'", args.user)
                })
                .await?;
            global.done(&format!(
                "permissions of user '{}' on vhost '{vhost}' set",
                args.user
            ))
        }
        PermissionCommand::Clear(args) => {
            let arguments = admin_args([("user", text(&args.user)), ("vhost", text(&vhost))]);
            global
                .server
                .admin("permission.clear", arguments, || {
                    format!("clearing the permissions of '{}' on '{vhost}'", args.user)
                })
                .await?;
            global.done(&format!(
                "permissions of user '{}' on vhost '{vhost}' cleared",
                args.user
            ))
        }
        PermissionCommand::List(args) => {
            let arguments = admin_args([
                ("user", args.of.as_deref().and_then(text)),
                ("vhost", global.vhost_given.as_deref().and_then(text)),
            ]);
            let permissions = global
                .server
                .admin_list::<PermissionInfo>("permission.list", arguments, &args.list, || {
                    "listing permissions".to_owned()
                })
                .await?;
            if args.list.list.json {
                print_json(&permissions)
            } else {
                emit(&permission_table(&decode::<Vec<PermissionInfo>>(
                    "permission.list",
                    &permissions,
                )?))
            }
        }
    }
}

/// `permission.list` as a table: user, vhost, and the three patterns.
pub fn permission_table(permissions: &[PermissionInfo]) -> String {
    let mut table = Table::new(&[
        ("USER", Align::Left),
        ("VHOST", Align::Left),
        ("CONFIGURE", Align::Left),
        ("WRITE", Align::Left),
        ("READ", Align::Left),
    ]);
    for p in permissions {
        table.row(vec![
            p.user.clone(),
            p.vhost.clone(),
            p.configure.clone(),
            p.write.clone(),
            p.read.clone(),
        ]);
    }
    table.render()
}
