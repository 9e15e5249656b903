//! Access control: users, their passwords and tags, and logging in (`Open`).
//!
//! Users live in memory (loaded at startup, changed through the store writer like any
//! topology change) so a login looks its user up without touching the disk. Passwords are
//! verified with argon2id on a blocking thread, at most one per core at a time:
//! a storm of logins queues there instead of stalling the runtime's threads. docs/access-control.md
//! is the user's guide.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap as FastMap;
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use warren_protocol::{Mechanism, Open};

use super::Broker;
use crate::admin_types::{PermissionInfo, UserInfo};
use crate::auth::{self, ADMINISTRATOR, GUEST, MONITORING};
use crate::error::BrokerError;
use crate::store::codec::{PermissionRecord, UserRecord};
use crate::store::TopologyChange;

use super::vhost::DEFAULT_VHOST;

/// How long a failed login waits before it is answered: slows password guessing down and
/// hides how long the check took.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(200);

/// The message of every failed login, whichever part was wrong: a client must not learn
/// whether a user exists.
pub const AUTH_FAILED: &str = "authentication failed";

/// Who a connection is: the user it logged in as, and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub name: String,
    /// The user's tags when it logged in.
    pub tags: Vec<String>,
    /// The virtual host the connection opened.
    pub vhost: String,
}

impl Principal {
    /// A principal with every right, for code that runs on the broker's own behalf (tests,
    /// the in-process benchmark).
    pub fn internal() -> Arc<Principal> {
        Arc::new(Principal {
            name: GUEST.to_owned(),
            tags: vec![ADMINISTRATOR.to_owned()],
            vhost: DEFAULT_VHOST.to_owned(),
        })
    }

    /// Whether the user has the `administrator` tag.
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == ADMINISTRATOR)
    }

    /// Whether the user has the `monitoring` (or `administrator`) tag.
    pub fn is_monitoring(&self) -> bool {
        self.is_administrator() || self.tags.iter().any(|t| t == MONITORING)
    }
}

/// The users and permissions the broker knows, and the bound on concurrent verifications.
#[derive(Debug)]
pub(crate) struct Access {
    users: RwLock<FastMap<String, Arc<UserRecord>>>,
    permissions: RwLock<BTreeMap<(String, String), PermissionRecord>>,
    /// One slot per core: argon2 is CPU-bound, so more at once would only make each slower.
    verify_slots: Semaphore,
}

impl Access {
    /// The users and permissions found at startup.
    pub(crate) fn new(users: Vec<UserRecord>, permissions: Vec<PermissionRecord>) -> Access {
        let slots = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Access {
            users: RwLock::new(
                users
                    .into_iter()
                    .map(|u| (u.name.clone(), Arc::new(u)))
                    .collect(),
            ),
            permissions: RwLock::new(
                permissions
                    .into_iter()
                    .map(|p| ((p.user.clone(), p.vhost.clone()), p))
                    .collect(),
            ),
            verify_slots: Semaphore::new(slots),
        }
    }

    fn user(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.read().get(name).cloned()
    }

    /// Runs `f` (an argon2 hash or verify) on a blocking thread, in one of the slots.
    async fn slow<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        let _slot = self
            .verify_slots
            .acquire()
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| BrokerError::ShuttingDown)
    }
}

/// Whether `ip` is this host: 127.0.0.0/8, `::1`, or an IPv4-mapped loopback address.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A user name as the admin commands accept it.
fn validate_user_name(name: &str) -> Result<(), BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::invalid("user name", "is empty"));
    }
    super::validate_name("user", name)
}

/// Tags from a comma-separated list: trimmed, empty ones dropped, sorted, each once.
pub fn parse_tags(list: &str) -> Vec<String> {
    let mut tags: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// A permission pattern as `permission.set` accepts it: a regular expression that
/// compiles. An empty pattern matches nothing (RabbitMQ's rule).
fn validate_pattern(which: &str, pattern: &str) -> Result<(), BrokerError> {
    if pattern.is_empty() {
        return Ok(());
    }
    regex::Regex::new(pattern)
        .map(drop)
        .map_err(|e| BrokerError::invalid(format!("{which} pattern '{pattern}'"), e.to_string()))
}

impl Broker {
    /// Checks an `Open`: the credentials, where `guest` may come from, and the virtual host.
    ///
    /// # Errors
    /// [`BrokerError::AccessRefused`] with [`AUTH_FAILED`] for an unknown user or a wrong
    /// password (after [`AUTH_FAILURE_DELAY`]), or naming the reason for `guest` off
    /// loopback and the External mechanism; [`BrokerError::NotFound`] for an unknown
    /// virtual host.
    pub async fn authenticate(
        &self,
        open: &Open,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Principal>, BrokerError> {
        if open.mechanism == Mechanism::External {
            return Err(BrokerError::AccessRefused(
                "authentication mechanism External is not supported by this server; log in with a password".into(),
            ));
        }
        let access = &self.inner.access;
        let user = access.user(&open.user);
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let password = open.password.clone();
        // The same work whether or not the user exists or has a password.
        let verified = access
            .slow(move || match hash {
                Some(h) => auth::verify_password(&h, &password),
                None => {
                    auth::verify_nothing(&password);
                    false
                }
            })
            .await?;
        let user = match user {
            Some(u) if verified => u,
            _ => {
                tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                return Err(BrokerError::AccessRefused(AUTH_FAILED.into()));
            }
        };
        if user.name == GUEST && !peer.is_some_and(is_loopback) {
            return Err(BrokerError::AccessRefused(
                "user 'guest' can only connect from localhost (delete it and add your own users: docs/access-control.md)".into(),
            ));
        }
        if self.vhost(&open.vhost).is_none() {
            return Err(BrokerError::not_found("vhost", &open.vhost));
        }
        let permitted = access
            .permissions
            .read()
            .contains_key(&(user.name.clone(), open.vhost.clone()));
        if !permitted {
            return Err(BrokerError::AccessRefused(format!(
                "user '{}' has no permissions on vhost '{}'",
                user.name, open.vhost
            )));
        }
        Ok(Arc::new(Principal {
            name: user.name.clone(),
            tags: user.tags.clone(),
            vhost: open.vhost.clone(),
        }))
    }

    /// `user.list`: every user with its tags, by name.
    pub(crate) fn user_list(&self) -> Vec<UserInfo> {
        let mut users: Vec<UserInfo> = self
            .inner
            .access
            .users
            .read()
            .values()
            .map(|u| UserInfo {
                name: u.name.clone(),
                tags: u.tags.clone(),
                has_password: u.password_hash.is_some(),
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    async fn hash(&self, password: &str) -> Result<String, BrokerError> {
        let password = password.as_bytes().to_vec();
        self.inner
            .access
            .slow(move || auth::hash_password(&password))
            .await?
            .map_err(|e| BrokerError::CommandInvalid(e.to_string()))
    }

    async fn put_user(&self, record: UserRecord) -> Result<(), BrokerError> {
        self.inner
            .store
            .change_topology(TopologyChange::PutUser(record.clone()))
            .await?;
        self.inner
            .access
            .users
            .write()
            .insert(record.name.clone(), Arc::new(record));
        Ok(())
    }

    /// `user.add`: a new user with a password (`None`: one that cannot log in with a
    /// password) and tags. It has no permissions yet.
    ///
    /// # Errors
    /// A bad name, a user of that name exists, or the store failed.
    pub(crate) async fn user_add(
        &self,
        name: &str,
        password: Option<&str>,
        tags: Vec<String>,
    ) -> Result<(), BrokerError> {
        validate_user_name(name)?;
        let password_hash = match password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let _guard = self.inner.topology.lock().await;
        if self.inner.access.user(name).is_some() {
            return Err(BrokerError::PreconditionFailed(format!(
                "user '{name}' already exists"
            )));
        }
        self.put_user(UserRecord {
            name: name.to_owned(),
            password_hash,
            tags,
        })
        .await
    }

    /// `user.delete`: removes a user and its permissions. Its open connections stay open
    /// until they close.
    ///
    /// # Errors
    /// No such user, or the store failed.
    pub(crate) async fn user_delete(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        if self.inner.access.user(name).is_none() {
            return Err(BrokerError::not_found("user", name));
        }
        self.inner
            .store
            .change_topology(TopologyChange::DeleteUser(name.to_owned()))
            .await?;
        let access = &self.inner.access;
        access.users.write().remove(name);
        access.permissions.write().retain(|(u, _), _| u != name);
        Ok(())
    }

    /// `user.passwd` and `user.tags`: changes a user's password and/or tags.
    ///
    /// # Errors
    /// No such user, or the store failed.
    pub(crate) async fn user_update(
        &self,
        name: &str,
        password: Option<&str>,
        tags: Option<Vec<String>>,
    ) -> Result<(), BrokerError> {
        let password_hash = match password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let _guard = self.inner.topology.lock().await;
        let current = self
            .inner
            .access
            .user(name)
            .ok_or_else(|| BrokerError::not_found("user", name))?;
        let mut record = (*current).clone();
        if let Some(h) = password_hash {
            record.password_hash = Some(h);
        }
        if let Some(t) = tags {
            record.tags = t;
        }
        self.put_user(record).await
    }
}

impl Broker {
    /// Drops every permission on virtual host `vhost` from memory (the store dropped them
    /// with it).
    pub(crate) fn forget_vhost_permissions(&self, vhost: &str) {
        self.inner
            .access
            .permissions
            .write()
            .retain(|(_, v), _| v != vhost);
    }

    /// `permission.list`: every permission (of one user, or in one virtual host, when
    /// given), by user and virtual host.
    pub(crate) fn permission_list(
        &self,
        user: Option<&str>,
        vhost: Option<&str>,
    ) -> Vec<PermissionInfo> {
        self.inner
            .access
            .permissions
            .read()
            .values()
            .filter(|p| user.is_none_or(|u| p.user == u) && vhost.is_none_or(|v| p.vhost == v))
            .map(|p| PermissionInfo {
                user: p.user.clone(),
                vhost: p.vhost.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            })
            .collect()
    }

    /// `permission.set`: what `record.user` may do in `record.vhost`, replacing what it
    /// could before.
    ///
    /// # Errors
    /// No such user or virtual host, a pattern that does not compile, or the store failed.
    pub(crate) async fn permission_set(&self, record: PermissionRecord) -> Result<(), BrokerError> {
        validate_pattern("configure", &record.configure)?;
        validate_pattern("write", &record.write)?;
        validate_pattern("read", &record.read)?;
        let _guard = self.inner.topology.lock().await;
        if self.inner.access.user(&record.user).is_none() {
            return Err(BrokerError::not_found("user", &record.user));
        }
        if self.vhost(&record.vhost).is_none() {
            return Err(BrokerError::not_found("vhost", &record.vhost));
        }
        self.inner
            .store
            .change_topology(TopologyChange::PutPermission(record.clone()))
            .await?;
        self.inner
            .access
            .permissions
            .write()
            .insert((record.user.clone(), record.vhost.clone()), record);
        Ok(())
    }

    /// `permission.clear`: removes what `user` may do in `vhost`; it can no longer open it.
    ///
    /// # Errors
    /// The user has no permissions there, or the store failed.
    pub(crate) async fn permission_clear(
        &self,
        user: &str,
        vhost: &str,
    ) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let key = (user.to_owned(), vhost.to_owned());
        if !self.inner.access.permissions.read().contains_key(&key) {
            return Err(BrokerError::NotFound {
                kind: "permission",
                name: format!("{user}@{vhost}"),
            });
        }
        self.inner
            .store
            .change_topology(TopologyChange::DeletePermission {
                user: user.to_owned(),
                vhost: vhost.to_owned(),
            })
            .await?;
        self.inner.access.permissions.write().remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.0.0.1", "::", "192.168.1.1", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn patterns_must_compile() {
        assert!(validate_pattern("read", "^amq\\.gen-.*").is_ok());
        assert!(validate_pattern("read", "").is_ok());
        let err = validate_pattern("write", "(").unwrap_err().to_string();
        assert!(err.contains("write pattern '('"), "{err}");
    }

    #[test]
    fn tags_are_trimmed_sorted_and_unique() {
        assert_eq!(
            parse_tags(" monitoring,administrator,,monitoring "),
            vec!["administrator", "monitoring"]
        );
        assert!(parse_tags("").is_empty());
    }
}
