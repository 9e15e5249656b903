//! `warren user add|delete|list|passwd|tags`: users and their passwords and tags
//! (administrators only; docs/access-control.md).

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::UserInfo;
use crate::cli::output::{emit, print_json, Align, Table};
use crate::cli::{admin_args, decode, read_password_line, Global, PagedListArgs};

/// `warren user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; its password is read from the first line of stdin. It has no
    /// permissions until `warren permission set` gives it some.
    Add(UserAddArgs),
    /// Delete a user and its permissions (`warren user delete guest` removes the built-in
    /// user).
    Delete(UserNameArgs),
    /// List users and their tags.
    List(PagedListArgs),
    /// Change a user's password, read from the first line of stdin.
    Passwd(UserNameArgs),
    /// Replace a user's tags.
    Tags(UserTagsArgs),
}

/// Arguments of `warren user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// User name.
    pub name: String,
    /// Comma-separated tags: `administrator` (every admin command), `monitoring` (listings
    /// and status), or any other word.
    #[arg(long, value_name = "TAG,...")]
    pub tags: Option<String>,
}

/// A user name.
#[derive(Debug, Args)]
pub struct UserNameArgs {
    /// User name.
    pub name: String,
}

/// Arguments of `warren user tags`.
#[derive(Debug, Args)]
pub struct UserTagsArgs {
    /// User name.
    pub name: String,
    /// Comma-separated tags; empty removes them all.
    pub tags: String,
}

/// The new password of `user add` / `user passwd`: stdin's first line, with
/// `--password-stdin` or when stdin is not a terminal; never typed at a prompt.
fn new_password(global: &Global) -> anyhow::Result<String> {
    if !global.password_stdin && std::io::stdin().is_terminal() {
        anyhow::bail!(
            "the password is read from stdin: `printf '%s\\n' \"$PASSWORD\" | warren user add NAME --password-stdin`"
        );
    }
    read_password_line()
}

/// Runs a user command.
///
/// # Errors
/// Connecting failed, stdin had no password, or the server refused.
pub async fn run(command: UserCommand, global: &Global) -> anyhow::Result<()> {
    let text = |s: &str| Some(FieldValue::String(s.to_owned()));
    match command {
        UserCommand::Add(args) => {
            let password = new_password(global)?;
            let arguments = admin_args([
                ("name", text(&args.name)),
                ("password", text(&password)),
                ("tags", args.tags.as_deref().and_then(text)),
            ]);
            global
                .server
                .admin("user.add", arguments, || {
                    format!("adding user '{}'", args.name)
                })
                .await?;
            global.done(&format!("user '{}' added", args.name))
        }
        UserCommand::Delete(args) => {
            global
                .server
                .admin(
                    "user.delete",
                    admin_args([("name", text(&args.name))]),
                    || format!("deleting user '{}'", args.name),
                )
                .await?;
            global.done(&format!("user '{}' deleted", args.name))
        }
        UserCommand::Passwd(args) => {
            let password = new_password(global)?;
            let arguments = admin_args([("name", text(&args.name)), ("password", text(&password))]);
            global
                .server
                .admin("user.passwd", arguments, || {
                    format!("changing the password of user '{}'", args.name)
                })
                .await?;
            global.done(&format!("password of user '{}' changed", args.name))
        }
        UserCommand::Tags(args) => {
            let arguments = admin_args([("name", text(&args.name)), ("tags", text(&args.tags))]);
            global
                .server
                .admin("user.tags", arguments, || {
                    format!("setting the tags of user '{}'", args.name)
                })
                .await?;
            global.done(&format!("tags of user '{}' set", args.name))
        }
        UserCommand::List(args) => {
            let users = global
                .server
                .admin_list::<UserInfo>("user.list", admin_args([]), &args, || {
                    "listing users".to_owned()
                })
                .await?;
            if args.list.json {
                print_json(&users)
            } else {
                emit(&user_table(&decode::<Vec<UserInfo>>("user.list", &users)?))
            }
        }
    }
}

/// `user.list` as a table: name, tags, and whether it can log in with a password.
pub fn user_table(users: &[UserInfo]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("TAGS", Align::Left),
        ("PASSWORD", Align::Left),
    ]);
    for u in users {
        table.row(vec![
            u.name.clone(),
            u.tags.join(","),
            if u.has_password { "yes" } else { "none" }.to_owned(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_show_tags_and_whether_they_have_a_password() {
        let text = user_table(&[
            UserInfo {
                name: "app".into(),
                tags: vec!["billing".into()],
                has_password: true,
            },
            UserInfo {
                name: "guest".into(),
                tags: vec!["administrator".into()],
                has_password: true,
            },
            UserInfo {
                name: "imported".into(),
                tags: vec![],
                has_password: false,
            },
        ]);
        assert_eq!(
            text,
            "NAME      TAGS           PASSWORD\napp       billing        yes\nguest     administrator  yes\nimported                 none\n"
        );
    }
}
