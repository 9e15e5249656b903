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
use regex::Regex;
use warren_protocol::{Mechanism, Open};

use super::Broker;
use crate::admin_types::{PermissionInfo, UserDefinition, UserInfo, VhostDefinition};
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

/// Who a connection is: the user it logged in as, its tags, and what it may do in the
/// virtual host it opened.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name.
    pub name: String,
    /// The user's tags when it logged in.
    pub tags: Vec<String>,
    /// The virtual host the connection opened.
    pub vhost: String,
    /// Its permissions there, compiled at `Open`.
    pub grants: Grants,
}

impl Principal {
    /// A principal with every right, for code that runs on the broker's own behalf (tests,
    /// the in-process benchmark).
    pub fn internal() -> Arc<Principal> {
        Arc::new(Principal {
            name: GUEST.to_owned(),
            tags: vec![ADMINISTRATOR.to_owned()],
            vhost: DEFAULT_VHOST.to_owned(),
            grants: Grants::all(),
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
    /// Permission patterns compiled once and shared by every connection that uses them:
    /// a compiled pattern costs about 12 KB, and each connection used to compile its three
    /// at `Open` (36 KB of a connection's ~80 KB).
    patterns: PatternCache,
    /// Where argon2 runs: one thread per core.
    slow: SlowPool,
}

/// Compiled permission patterns by their text.
#[derive(Debug, Default)]
struct PatternCache {
    compiled: parking_lot::Mutex<FastMap<String, Arc<Regex>>>,
}

/// Patterns kept before the cache drops those no connection holds any more (patterns
/// change only by `permission.set`, so this is reached only by churning them).
const PATTERN_CACHE_SWEEP: usize = 1024;

impl PatternCache {
    /// `pattern` compiled, shared with every other holder; `None` for an empty pattern (it
    /// grants nothing) or one that no longer compiles.
    fn get(&self, pattern: &str) -> Option<Arc<Regex>> {
        if pattern.is_empty() {
            return None;
        }
        let mut compiled = self.compiled.lock();
        if let Some(re) = compiled.get(pattern) {
            return Some(Arc::clone(re));
        }
        let re = Arc::new(compile(pattern)?);
        if compiled.len() >= PATTERN_CACHE_SWEEP {
            compiled.retain(|_, r| Arc::strong_count(r) > 1);
        }
        compiled.insert(pattern.to_owned(), Arc::clone(&re));
        Some(re)
    }

    /// The grants of a permission record, from the cache.
    fn grants(&self, p: &PermissionRecord) -> Grants {
        Grants {
            configure: self.get(&p.configure),
            write: self.get(&p.write),
            read: self.get(&p.read),
        }
    }
}

type SlowJob = Box<dyn FnOnce() + Send>;

/// A few dedicated threads for argon2 hashing and verifying. One per core: argon2 is
/// CPU-bound, so more at once would only make each slower. Dedicated rather than tokio's
/// blocking pool: each verification allocates 19 MiB, and every thread that ever ran one
/// keeps that in its allocator arena; on the blocking pool, a burst of 100 logins left about
/// 200 MiB resident (tests/hostile_clients.rs), on these threads at most 19 MiB a core.
#[derive(Debug)]
struct SlowPool {
    jobs: std::sync::mpsc::Sender<SlowJob>,
}

impl SlowPool {
    fn new(threads: usize) -> SlowPool {
        let (jobs, rx) = std::sync::mpsc::channel::<SlowJob>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("warren-auth-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take a job; the pool ends with the sender.
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a password-hashing thread");
            }
        }
        SlowPool { jobs }
    }
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
            patterns: PatternCache::default(),
            slow: SlowPool::new(slots),
        }
    }

    fn user(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.read().get(name).cloned()
    }

    /// Runs `f` (an argon2 hash or verify) on one of the password-hashing threads.
    async fn slow<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.slow
            .jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| BrokerError::ShuttingDown)?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)
    }
}

/// Which of RabbitMQ's three permissions an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Declaring and deleting queues and exchanges.
    Configure,
    /// Publishing to an exchange; binding a queue (or destination exchange).
    Write,
    /// Consuming, getting and purging from a queue; binding from an exchange.
    Read,
}

impl Perm {
    fn as_str(self) -> &'static str {
        match self {
            Perm::Configure => "configure",
            Perm::Write => "write",
            Perm::Read => "read",
        }
    }
}

/// A user's permissions in the virtual host it opened. A missing pattern (empty, or none
/// set) matches nothing. The patterns are shared (compiled once per pattern, not per
/// connection).
#[derive(Clone, Default)]
pub struct Grants {
    configure: Option<Arc<Regex>>,
    write: Option<Arc<Regex>>,
    read: Option<Arc<Regex>>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |r: &Option<Arc<Regex>>| r.as_deref().map_or("", Regex::as_str).to_owned();
        f.debug_struct("Grants")
            .field("configure", &show(&self.configure))
            .field("write", &show(&self.write))
            .field("read", &show(&self.read))
            .finish()
    }
}

fn compile(pattern: &str) -> Option<Regex> {
    if pattern.is_empty() {
        return None;
    }
    // Patterns are checked when set; one that no longer compiles grants nothing.
    Regex::new(pattern).ok()
}

impl Grants {
    /// The grants of a permission record, each pattern compiled afresh (the broker's logins
    /// share compiled patterns instead).
    pub fn of(p: &PermissionRecord) -> Grants {
        let fresh = |pattern: &str| compile(pattern).map(Arc::new);
        Grants {
            configure: fresh(&p.configure),
            write: fresh(&p.write),
            read: fresh(&p.read),
        }
    }

    /// Everything (`.*` for all three), one compiled pattern shared by the three.
    pub fn all() -> Grants {
        let all = compile(".*").map(Arc::new);
        Grants {
            configure: all.clone(),
            write: all.clone(),
            read: all,
        }
    }

    /// Whether `perm` is granted on the resource `name`. As in RabbitMQ the pattern is
    /// searched for anywhere in the name (anchor it with `^...$` to match whole names).
    pub fn allows(&self, perm: Perm, name: &str) -> bool {
        let re = match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        };
        re.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// Whether `perm` is granted on every name (the pattern is exactly `.*`), so a hot path
    /// may skip the check.
    pub fn allows_all(&self, perm: Perm) -> bool {
        let re = match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        };
        re.as_ref().is_some_and(|r| r.as_str() == ".*")
    }
}

/// The name a permission is checked on: the default exchange `""` is `amq.default`, as in
/// RabbitMQ.
pub fn resource_name<'a>(kind: &str, name: &'a str) -> &'a str {
    if kind == "exchange" && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

impl Principal {
    /// Checks `perm` on the `kind` (`queue` or `exchange`) named `name`.
    ///
    /// # Errors
    /// [`BrokerError::AccessRefused`] naming the resource, the virtual host, the user and
    /// the permission it lacks.
    pub fn check(&self, perm: Perm, kind: &str, name: &str) -> Result<(), BrokerError> {
        let resource = resource_name(kind, name);
        if self.grants.allows(perm, resource) {
            return Ok(());
        }
        Err(BrokerError::AccessRefused(format!(
            "access to {kind} '{resource}' in vhost '{}' refused for user '{}': it needs {} permission",
            self.vhost,
            self.name,
            perm.as_str()
        )))
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
    /// As [`Broker::login`], then as [`Broker::enter_vhost`].
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
        let user = self.login(&open.user, &open.password, peer).await?;
        self.enter_vhost(&user, &open.vhost)
    }

    /// Checks a user name and password, and where `guest` may come from: the first half of
    /// a login, shared by both front doors (AMQP checks the password at `start-ok` and the
    /// virtual host later, at `connection.open`). Returns the user's name.
    ///
    /// # Errors
    /// [`BrokerError::AccessRefused`] with [`AUTH_FAILED`] for an unknown user or a wrong
    /// password (after [`AUTH_FAILURE_DELAY`]), or naming the reason for `guest` off
    /// loopback.
    pub async fn login(
        &self,
        name: &str,
        password: &[u8],
        peer: Option<IpAddr>,
    ) -> Result<String, BrokerError> {
        let access = &self.inner.access;
        let user = access.user(name);
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let password = bytes::Bytes::copy_from_slice(password);
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
        Ok(user.name.clone())
    }

    /// The second half of a login: `user` (already checked by [`Broker::login`]) enters
    /// `vhost`, with the permissions it has there.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] for an unknown virtual host; [`BrokerError::AccessRefused`]
    /// when the user has no permissions there (or was deleted since it logged in).
    pub fn enter_vhost(&self, user: &str, vhost: &str) -> Result<Arc<Principal>, BrokerError> {
        let access = &self.inner.access;
        let Some(user) = access.user(user) else {
            return Err(BrokerError::AccessRefused(AUTH_FAILED.into()));
        };
        if self.vhost(vhost).is_none() {
            return Err(BrokerError::not_found("vhost", vhost));
        }
        let grants = access
            .permissions
            .read()
            .get(&(user.name.clone(), vhost.to_owned()))
            .map(|p| access.patterns.grants(p));
        let Some(grants) = grants else {
            return Err(BrokerError::AccessRefused(format!(
                "user '{}' has no permissions on vhost '{}'",
                user.name, vhost
            )));
        };
        Ok(Arc::new(Principal {
            name: user.name.clone(),
            tags: user.tags.clone(),
            vhost: vhost.to_owned(),
            grants,
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
        // As RabbitMQ: the user's connections close (CONNECTION_FORCED); they were
        // authorized by a user that no longer exists.
        self.force_close_where(
            |s| s.user.name == name,
            &format!("user '{}' was deleted", crate::clip::name(name)),
        );
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
    fn logins_share_compiled_patterns_and_unused_ones_are_swept() {
        let cache = PatternCache::default();
        let record = PermissionRecord {
            user: "app".into(),
            vhost: "/".into(),
            configure: "^app\\.".into(),
            write: ".*".into(),
            read: String::new(),
        };
        let (a, b) = (cache.grants(&record), cache.grants(&record));
        let same = |x: &Option<Arc<Regex>>, y: &Option<Arc<Regex>>| match (x, y) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        assert!(same(&a.configure, &b.configure), "compiled once, shared");
        assert!(same(&a.write, &b.write));
        assert!(a.read.is_none() && b.read.is_none(), "empty grants nothing");
        assert!(a.allows(Perm::Configure, "app.jobs") && !a.allows(Perm::Configure, "jobs"));
        // Churned patterns nobody holds are dropped once the cache is full; held ones stay.
        for i in 0..PATTERN_CACHE_SWEEP {
            drop(cache.get(&format!("^q{i}$")));
        }
        assert!(cache.compiled.lock().len() < PATTERN_CACHE_SWEEP);
        assert!(same(&cache.get(".*"), &a.write));
    }

    #[test]
    fn grants_search_their_patterns_and_empty_means_nothing() {
        let g = Grants::of(&PermissionRecord {
            user: "app".into(),
            vhost: "/".into(),
            configure: "^app\\.".into(),
            write: ".*".into(),
            read: String::new(),
        });
        assert!(g.allows(Perm::Configure, "app.jobs"));
        assert!(!g.allows(Perm::Configure, "jobs.app.x"));
        assert!(g.allows(Perm::Write, "anything"));
        assert!(g.allows_all(Perm::Write));
        assert!(!g.allows_all(Perm::Configure));
        assert!(!g.allows(Perm::Read, "app.jobs"));
        let p = Principal {
            name: "app".into(),
            tags: vec![],
            vhost: "/".into(),
            grants: g,
        };
        let err = p
            .check(Perm::Read, "queue", "app.jobs")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "access to queue 'app.jobs' in vhost '/' refused for user 'app': it needs read permission"
        );
        // The default exchange is checked as amq.default.
        let err = p
            .check(Perm::Configure, "exchange", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exchange 'amq.default'"), "{err}");
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

/// The users, virtual hosts and permissions of a definitions document: parsed and checked
/// before anything changes, applied with the rest of the import.
#[derive(Debug, Default)]
pub(crate) struct AccessPlan {
    vhosts: Vec<String>,
    /// Each user, with the hashing algorithm of a hash Warren cannot verify, if it had one.
    users: Vec<(UserRecord, Option<String>)>,
    permissions: Vec<PermissionRecord>,
}

/// What applying an [`AccessPlan`] did.
#[derive(Debug, Default)]
pub(crate) struct AccessImported {
    pub(crate) users_created: u64,
    pub(crate) vhosts_created: u64,
    pub(crate) permissions_set: u64,
    pub(crate) warnings: Vec<String>,
}

impl AccessPlan {
    /// Whether the document creates virtual host `name` (or lists it as existing).
    pub(crate) fn declares_vhost(&self, name: &str) -> bool {
        self.vhosts.iter().any(|v| v == name)
    }

    /// Reads `users`, `vhosts` and `permissions` (all optional) from a definitions
    /// document, Warren's or RabbitMQ's. A password hash Warren cannot verify (RabbitMQ's
    /// salted SHA-256) leaves the user without a password, and says so in a warning.
    ///
    /// # Errors
    /// A malformed entry, a bad name, or a permission pattern that does not compile.
    pub(crate) fn parse(doc: &serde_json::Value) -> Result<AccessPlan, BrokerError> {
        use serde_json::Value;
        let list = |key: &str| -> Result<Vec<Value>, BrokerError> {
            match doc.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(BrokerError::invalid(
                    format!("definitions {key}"),
                    "must be an array",
                )),
            }
        };
        let text = |v: &Value, key: &str, what: &str| -> Result<String, BrokerError> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    BrokerError::invalid(
                        format!("definitions: {what} field {key}"),
                        "must be a string",
                    )
                })
        };
        let mut plan = AccessPlan::default();
        for v in list("vhosts")? {
            let name = text(&v, "name", "vhost")?;
            if name.is_empty() {
                return Err(BrokerError::invalid("definitions: vhost name", "is empty"));
            }
            super::validate_name("vhost", &name)?;
            plan.vhosts.push(name);
        }
        for u in list("users")? {
            let name = text(&u, "name", "user")?;
            validate_user_name(&name)?;
            // RabbitMQ wrote tags as one comma-separated string before 3.13, a list since.
            let tags = match u.get("tags") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => parse_tags(s),
                Some(Value::Array(a)) => {
                    let joined: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
                    parse_tags(&joined.join(","))
                }
                Some(_) => {
                    return Err(BrokerError::invalid(
                        format!("definitions: user '{name}' tags"),
                        "must be a string or a list of strings",
                    ))
                }
            };
            let hash = u.get("password_hash").and_then(Value::as_str).unwrap_or("");
            let algorithm = u
                .get("hashing_algorithm")
                .and_then(Value::as_str)
                .unwrap_or("");
            let (password_hash, unverifiable) = if hash.is_empty() {
                (None, None)
            } else if hash.starts_with("$argon2") && auth::is_phc(hash) {
                (Some(hash.to_owned()), None)
            } else if algorithm.is_empty() {
                (None, Some("unknown algorithm".to_owned()))
            } else {
                (None, Some(algorithm.to_owned()))
            };
            plan.users.push((
                UserRecord {
                    name,
                    password_hash,
                    tags,
                },
                unverifiable,
            ));
        }
        for p in list("permissions")? {
            let record = PermissionRecord {
                user: text(&p, "user", "permission")?,
                vhost: text(&p, "vhost", "permission")?,
                configure: text(&p, "configure", "permission")?,
                write: text(&p, "write", "permission")?,
                read: text(&p, "read", "permission")?,
            };
            validate_pattern("configure", &record.configure)?;
            validate_pattern("write", &record.write)?;
            validate_pattern("read", &record.read)?;
            plan.permissions.push(record);
        }
        Ok(plan)
    }
}

impl Broker {
    /// Checks that every permission of `plan` names a user and a virtual host that exist
    /// or that the plan creates.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] naming the missing user or virtual host.
    pub(crate) fn check_access_plan(&self, plan: &AccessPlan) -> Result<(), BrokerError> {
        for p in &plan.permissions {
            if !plan.users.iter().any(|(u, _)| u.name == p.user)
                && self.inner.access.user(&p.user).is_none()
            {
                return Err(BrokerError::not_found("user (permission)", &p.user));
            }
            if !plan.vhosts.contains(&p.vhost) && self.vhost(&p.vhost).is_none() {
                return Err(BrokerError::not_found("vhost (permission)", &p.vhost));
            }
        }
        Ok(())
    }

    /// Applies a checked plan: creates the missing virtual hosts, creates or updates the
    /// users (as RabbitMQ's import does; an existing user keeps its password when the file's
    /// hash cannot be verified) and sets every permission.
    ///
    /// # Errors
    /// A store failure.
    pub(crate) async fn apply_access_plan(
        &self,
        plan: AccessPlan,
    ) -> Result<AccessImported, BrokerError> {
        let mut done = AccessImported::default();
        for v in plan.vhosts {
            if self.vhost(&v).is_none() {
                self.vhost_add(&v).await?;
                done.vhosts_created += 1;
            }
        }
        for (mut u, unverifiable) in plan.users {
            let _guard = self.inner.topology.lock().await;
            let existing = self.inner.access.user(&u.name);
            if let Some(algorithm) = unverifiable {
                let name = &u.name;
                done.warnings.push(if existing.is_some() {
                    format!("user '{name}': its password hash ({algorithm}) cannot be verified by Warren; it keeps its current password")
                } else {
                    format!("user '{name}': its password hash ({algorithm}) cannot be verified by Warren; imported without a password (it cannot log in until `warren user passwd {name}`)")
                });
            }
            match existing {
                None => {
                    self.put_user(u).await?;
                    done.users_created += 1;
                }
                Some(current) => {
                    if u.password_hash.is_none() {
                        u.password_hash.clone_from(&current.password_hash);
                    }
                    // Importing the same file again writes nothing.
                    if *current != u {
                        self.put_user(u).await?;
                    }
                }
            }
        }
        for p in plan.permissions {
            // Counted only when something changes, so importing a file twice (or a server's
            // own export) reports nothing new.
            let same = self
                .inner
                .access
                .permissions
                .read()
                .get(&(p.user.clone(), p.vhost.clone()))
                .is_some_and(|existing| *existing == p);
            if !same {
                self.permission_set(p).await?;
                done.permissions_set += 1;
            }
        }
        Ok(done)
    }

    /// The users, virtual hosts and permissions as a definitions document has them.
    pub(crate) fn access_definitions(
        &self,
    ) -> (
        Vec<UserDefinition>,
        Vec<VhostDefinition>,
        Vec<PermissionInfo>,
    ) {
        let mut users: Vec<UserDefinition> = self
            .inner
            .access
            .users
            .read()
            .values()
            .map(|u| UserDefinition {
                name: u.name.clone(),
                password_hash: u.password_hash.clone().unwrap_or_default(),
                hashing_algorithm: "argon2id".to_owned(),
                tags: u.tags.clone(),
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let vhosts = self
            .vhost_list()
            .iter()
            .map(|v| VhostDefinition {
                name: v.name.to_string(),
            })
            .collect();
        (users, vhosts, self.permission_list(None, None))
    }
}
