//! Administrative commands (`Admin` frames). Each answers one JSON document; the field
//! names are part of the protocol (PROTOCOL.md §15) and of `warren ... --json`.
//!
//! The results are the plain structs of [`crate::admin_types`], which the client and the
//! CLI decode; JSON is only their encoding. This file dispatches a command to the file
//! that answers it and holds the argument helpers they share:
//! - `listing.rs`: `status` and the `*.list`/`queue.inspect` listings;
//! - `dlq.rs`: dead-letter operations (`dlq.peek`, `dlq.replay`, `dlq.purge`), and
//!   `queue.peek` and `message.delete`, which use the same selection of ready messages;
//! - `definitions.rs`: `definitions.export` and `definitions.import`;
//! - `../access.rs`: `user.*` and `permission.*` (administrators only).

mod definitions;
mod dlq;
mod listing;
mod stream;

pub use dlq::DEFAULT_PEEK_LIMIT;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use super::access::parse_tags;
use super::queue::Queue;
use super::session::Session;
use super::vhost::VHost;
use super::Broker;
use crate::admin_types::{KeyKind, KeyPart, Listed};
use crate::error::BrokerError;
use crate::store::codec::PermissionRecord;
use dlq::Filter;
use listing::queue_info;

fn opt_str<'a>(args: &'a FieldTable, name: &str) -> Result<Option<&'a str>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::String(s)) => Ok(Some(s)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn req_str<'a>(args: &'a FieldTable, name: &str) -> Result<&'a str, BrokerError> {
    opt_str(args, name)?.ok_or_else(|| {
        BrokerError::invalid(format!("admin argument {name}"), "is required".to_owned())
    })
}

fn opt_u64(args: &FieldTable, name: &str) -> Result<Option<u64>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a non-negative integer, got {other:?}"),
        )),
    }
}

/// A page of a listing: the entries whose keys sort after `after`, at most `limit` of
/// them. Without `limit`, every entry after `after` (a large listing may then not fit in a
/// frame: clients page with `limit`). Every listing is sorted by a key unique within it
/// ([`Listed`]), so that paging with the last key of one page as the `after` of the next
/// visits every entry once, whatever was added or removed between the requests (an entry
/// added behind the cursor is not seen, one removed is not repeated).
///
/// `after` is a cursor: for a one-field key the field itself (a name, or a connection id
/// as a number or its digits); for a longer key the JSON array of its fields, which may be
/// shorter than the key (`["logs"]`: the bindings of sources after `logs`). An entry is
/// after the cursor when its key, cut to the cursor's length, sorts after it.
pub(crate) struct Page<'a> {
    after: Option<&'a FieldValue>,
    limit: Option<usize>,
}

impl<'a> Page<'a> {
    /// The `limit` and `after` admin arguments.
    ///
    /// # Errors
    /// `limit` is 0 or not a non-negative integer.
    pub(crate) fn parse(args: &'a FieldTable) -> Result<Page<'a>, BrokerError> {
        let limit = match opt_u64(args, "limit")? {
            Some(0) => {
                return Err(BrokerError::invalid(
                    "admin argument limit",
                    "must be at least 1".to_owned(),
                ))
            }
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        Ok(Page {
            after: args.get("after"),
            limit,
        })
    }

    /// `after` read as a key of the fields `kinds`.
    fn cursor(&self, kinds: &[KeyKind]) -> Result<Option<Vec<KeyPart>>, BrokerError> {
        let bad = |why: String| BrokerError::invalid("admin argument after", why);
        let single = |text: &str| match kinds.first() {
            Some(KeyKind::Number) => text
                .parse::<u64>()
                .map(KeyPart::Number)
                .map_err(|_| bad(format!("'{}' is not an id", crate::clip::name(text)))),
            _ => Ok(KeyPart::Text(text.to_owned())),
        };
        let parts = match self.after {
            None => return Ok(None),
            Some(FieldValue::String(s)) if kinds.len() > 1 && s.starts_with('[') => {
                let parts: Vec<KeyPart> = serde_json::from_str(s)
                    .map_err(|e| bad(format!("not a JSON array of key fields: {e}")))?;
                if parts.is_empty() || parts.len() > kinds.len() {
                    return Err(bad(format!(
                        "a key of this listing has 1 to {} fields, got {}",
                        kinds.len(),
                        parts.len()
                    )));
                }
                for (part, kind) in parts.iter().zip(kinds) {
                    if !matches!(
                        (part, kind),
                        (KeyPart::Number(_), KeyKind::Number) | (KeyPart::Text(_), KeyKind::Text)
                    ) {
                        return Err(bad(format!("key field {part:?} should be a {kind:?}")));
                    }
                }
                parts
            }
            Some(FieldValue::String(s)) => vec![single(s)?],
            Some(FieldValue::Int(i)) if *i >= 0 && kinds.first() == Some(&KeyKind::Number) => {
                vec![KeyPart::Number(i.unsigned_abs())]
            }
            Some(other) => {
                return Err(bad(format!("expected a string, got {other:?}")));
            }
        };
        Ok(Some(parts))
    }

    /// The page of `items`, which are sorted by `key` (fields `kinds`). Looks at the keys
    /// of only O(log n) items.
    pub(crate) fn by_key<T>(
        &self,
        kinds: &[KeyKind],
        items: Vec<T>,
        key: impl Fn(&T) -> Vec<KeyPart>,
    ) -> Result<Vec<T>, BrokerError> {
        let start = match self.cursor(kinds)? {
            None => 0,
            Some(after) => items.partition_point(|i| {
                let mut k = key(i);
                k.truncate(after.len());
                k <= after
            }),
        };
        let end = self
            .limit
            .map_or(items.len(), |l| start.saturating_add(l).min(items.len()));
        Ok(items.into_iter().skip(start).take(end - start).collect())
    }

    /// The page of `items`, which are sorted by `name`.
    fn of<T>(&self, items: Vec<T>, name: impl Fn(&T) -> &str) -> Result<Vec<T>, BrokerError> {
        self.by_key(&[KeyKind::Text], items, |i| {
            vec![KeyPart::Text(name(i).to_owned())]
        })
    }

    /// A listing's page: `items` sorted by their keys, then cut.
    pub(crate) fn listed<T: Listed>(&self, mut items: Vec<T>) -> Result<Vec<T>, BrokerError> {
        items.sort_by_cached_key(Listed::page_key);
        self.by_key(T::KEY, items, Listed::page_key)
    }
}

/// The read-only listings: the `monitoring` tag (or `administrator`) may run them.
const LISTINGS: [&str; 9] = [
    "stream.info",
    "stream.consumers",
    "status",
    "queue.list",
    "queue.inspect",
    "exchange.list",
    "binding.list",
    "connection.list",
    "consumer.list",
];

/// Who may run an admin command: listings need the `monitoring` or `administrator` tag,
/// everything else (users, vhosts, permissions, definitions, dead-letter and message
/// operations, `queue.peek`) the `administrator` tag.
fn authorize_admin(session: &Session, command: &str) -> Result<(), BrokerError> {
    let user = &session.user;
    let (allowed, needs) = if LISTINGS.contains(&command) {
        (user.is_monitoring(), "the monitoring or administrator tag")
    } else {
        (user.is_administrator(), "the administrator tag")
    };
    if allowed {
        return Ok(());
    }
    Err(BrokerError::AccessRefused(format!(
        "{command} needs {needs}; user '{}' does not have it",
        user.name
    )))
}

/// An admin result as the JSON body of `AdminOk`. It goes through a `Value`, whose maps
/// are sorted, so every object's keys go out in sorted order whatever the field order of
/// its struct: the bytes are what they were when the results were built with `json!`.
fn encode<T: Serialize>(result: &T) -> Result<Bytes, BrokerError> {
    serde_json::to_value(result)
        .and_then(|value| serde_json::to_vec(&value))
        .map(Bytes::from)
        .map_err(|e| BrokerError::CommandInvalid(format!("encoding the result: {e}")))
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use definitions::parse_document;

/// Runs every parser of client-given admin arguments over `args`, as the commands of
/// [`Broker::admin`] would, with no broker behind them: for the fuzz checks
/// (`crate::fuzzing`). Returns each parser's refusal, if any, as text.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_args(args: &FieldTable) -> Vec<String> {
    let mut refusals = Vec::new();
    let mut note = |r: Result<(), BrokerError>| {
        if let Err(e) = r {
            refusals.push(e.to_string());
        }
    };
    for name in [
        "queue",
        "exchange",
        "to_exchange",
        "routing_key",
        "id",
        "definitions",
    ] {
        note(opt_str(args, name).map(drop));
        note(req_str(args, name).map(drop));
    }
    note(opt_u64(args, "limit").map(drop));
    if let Ok(page) = Page::parse(args) {
        for kinds in [
            crate::admin_types::BindingInfo::KEY,
            crate::admin_types::ConnectionInfo::KEY,
            crate::admin_types::ConsumerInfo::KEY,
        ] {
            note(page.cursor(kinds).map(drop));
        }
    }
    note(Filter::parse(args).map(drop));
    if let Ok(Some(text)) = opt_str(args, "definitions") {
        note(parse_document(text));
    }
    refusals
}

impl Broker {
    /// Runs an admin command and returns its result (a type of [`crate::admin_types`]) as
    /// JSON.
    ///
    /// # Errors
    /// An unknown command, a bad or missing argument, a missing queue, a conflicting import,
    /// or a store failure.
    pub async fn admin(
        &self,
        session: &Session,
        command: &str,
        args: &FieldTable,
    ) -> Result<Bytes, BrokerError> {
        authorize_admin(session, command)?;
        match command {
            "status" => encode(&self.status()),
            "queue.list" => {
                let page = Page::parse(args)?;
                let queues = page.of(self.sorted_queues(&session.vhost), |q| &q.name)?;
                encode(&queues.iter().map(|q| queue_info(q)).collect::<Vec<_>>())
            }
            "queue.inspect" => {
                let name = req_str(args, "queue")?;
                let q = session
                    .vhost
                    .queue(name)
                    .ok_or_else(|| BrokerError::not_found("queue", name))?;
                encode(&queue_info(&q))
            }
            "exchange.list" => {
                let page = Page::parse(args)?;
                encode(&page.listed(self.exchanges(&session.vhost))?)
            }
            "binding.list" => encode(&Page::parse(args)?.listed(self.bindings(
                &session.vhost,
                opt_str(args, "queue")?,
                opt_str(args, "exchange")?,
            ))?),
            "connection.list" => encode(&Page::parse(args)?.listed(self.connections())?),
            "consumer.list" => encode(&Page::parse(args)?.listed(self.consumers(&session.vhost))?),
            "stream.info" => encode(&stream::info(&session.vhost, req_str(args, "queue")?)?),
            "stream.consumers" => {
                encode(&stream::info(&session.vhost, req_str(args, "queue")?)?.named_consumers)
            }
            // One engine: a queue peek is a dead-letter peek without the dead-letter filters.
            "dlq.peek" | "queue.peek" => encode(
                &self
                    .dlq_peek(
                        &session.vhost,
                        req_str(args, "queue")?,
                        Filter::parse(args)?,
                    )
                    .await?,
            ),
            "dlq.replay" => {
                let target = match (opt_str(args, "to_exchange")?, opt_str(args, "routing_key")?) {
                    (Some(e), k) => Some((e.to_owned(), k.unwrap_or("").to_owned())),
                    (None, Some(_)) => {
                        return Err(BrokerError::invalid(
                            "admin argument routing_key",
                            "needs to_exchange".to_owned(),
                        ))
                    }
                    (None, None) => None,
                };
                encode(
                    &self
                        .dlq_replay(
                            &session.vhost,
                            req_str(args, "queue")?,
                            Filter::parse(args)?,
                            target,
                        )
                        .await?,
                )
            }
            "dlq.purge" => encode(
                &self
                    .dlq_purge(
                        &session.vhost,
                        req_str(args, "queue")?,
                        Filter::parse(args)?,
                    )
                    .await?,
            ),
            "message.delete" => encode(
                &self
                    .message_delete(
                        &session.vhost,
                        req_str(args, "queue")?,
                        req_str(args, "id")?,
                    )
                    .await?,
            ),
            "user.add" | "user.delete" | "user.list" | "user.passwd" | "user.tags"
            | "permission.set" | "permission.clear" | "permission.list" | "vhost.add"
            | "vhost.delete" | "vhost.list" => self.access_admin(command, args).await,
            "definitions.export" => encode(&self.definitions_export(&session.vhost)),
            "definitions.import" => {
                let text = req_str(args, "definitions")?;
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    BrokerError::invalid("definitions", format!("not valid JSON: {e}"))
                })?;
                encode(&self.definitions_import(session, &doc).await?)
            }
            other => Err(BrokerError::CommandInvalid(format!(
                "unknown admin command '{other}'"
            ))),
        }
    }

    /// The commands on users, permissions and virtual hosts (administrators only: see
    /// `authorize_admin`).
    async fn access_admin(&self, command: &str, args: &FieldTable) -> Result<Bytes, BrokerError> {
        let tags = |args| opt_str(args, "tags").map(|t| t.map(parse_tags));
        match command {
            "user.add" => {
                let tags = tags(args)?.unwrap_or_default();
                self.user_add(req_str(args, "name")?, opt_str(args, "password")?, tags)
                    .await?;
                encode(&serde_json::json!({}))
            }
            "user.delete" => {
                self.user_delete(req_str(args, "name")?).await?;
                encode(&serde_json::json!({}))
            }
            "user.list" => encode(&Page::parse(args)?.listed(self.user_list())?),
            "user.passwd" => {
                let password = req_str(args, "password")?;
                self.user_update(req_str(args, "name")?, Some(password), None)
                    .await?;
                encode(&serde_json::json!({}))
            }
            "user.tags" => {
                let tags = tags(args)?.unwrap_or_default();
                self.user_update(req_str(args, "name")?, None, Some(tags))
                    .await?;
                encode(&serde_json::json!({}))
            }
            "permission.set" => {
                let pattern = |name| opt_str(args, name).map(|p| p.unwrap_or("").to_owned());
                self.permission_set(PermissionRecord {
                    user: req_str(args, "user")?.to_owned(),
                    vhost: req_str(args, "vhost")?.to_owned(),
                    configure: pattern("configure")?,
                    write: pattern("write")?,
                    read: pattern("read")?,
                })
                .await?;
                encode(&serde_json::json!({}))
            }
            "permission.clear" => {
                self.permission_clear(req_str(args, "user")?, req_str(args, "vhost")?)
                    .await?;
                encode(&serde_json::json!({}))
            }
            "vhost.add" => {
                self.vhost_add(req_str(args, "name")?).await?;
                encode(&serde_json::json!({}))
            }
            "vhost.delete" => {
                self.vhost_delete(req_str(args, "name")?).await?;
                encode(&serde_json::json!({}))
            }
            "vhost.list" => encode(&Page::parse(args)?.listed(self.vhost_infos())?),
            "permission.list" => {
                encode(&Page::parse(args)?.listed(
                    self.permission_list(opt_str(args, "user")?, opt_str(args, "vhost")?),
                )?)
            }
            other => Err(BrokerError::CommandInvalid(format!(
                "unknown admin command '{other}'"
            ))),
        }
    }

    fn sorted_queues(&self, vh: &VHost) -> Vec<Arc<Queue>> {
        let mut qs: Vec<Arc<Queue>> = vh.queue_list();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_the_names_after_after_at_most_limit() {
        let names = vec!["a", "b", "c", "d"];
        let page = |after: Option<&str>, limit: Option<i64>| {
            let mut args = FieldTable::new();
            if let Some(a) = after {
                args.insert("after".into(), FieldValue::String(a.into()));
            }
            if let Some(l) = limit {
                args.insert("limit".into(), FieldValue::Int(l));
            }
            Page::parse(&args).and_then(|p| p.of(names.clone(), |n| n))
        };
        assert_eq!(page(None, None).unwrap(), ["a", "b", "c", "d"]);
        assert_eq!(page(None, Some(2)).unwrap(), ["a", "b"]);
        assert_eq!(page(Some("b"), Some(5)).unwrap(), ["c", "d"]);
        assert_eq!(page(Some("bb"), None).unwrap(), ["c", "d"]);
        assert!(page(Some("d"), Some(1)).unwrap().is_empty());
        assert!(page(None, Some(0)).is_err());
    }
    #[test]
    fn a_cursor_is_read_by_the_kinds_of_its_listings_key() {
        let kinds = [KeyKind::Text, KeyKind::Text, KeyKind::Number];
        let cursor = |after: FieldValue| {
            let args: FieldTable = [("after".to_owned(), after)].into_iter().collect();
            Page::parse(&args).and_then(|p| p.cursor(&kinds))
        };
        let t = |s: &str| KeyPart::Text(s.to_owned());
        assert_eq!(
            cursor(FieldValue::String(r#"["q","tag",7]"#.into())).unwrap(),
            Some(vec![t("q"), t("tag"), KeyPart::Number(7)])
        );
        assert_eq!(
            cursor(FieldValue::String("q".into())).unwrap(),
            Some(vec![t("q")])
        );
        for bad in [r#"["q","tag","7"]"#, r#"["q","t",7,1]"#, "[]", "[oops"] {
            assert!(cursor(FieldValue::String(bad.into())).is_err(), "{bad}");
        }
        let ids = |after: FieldValue| {
            let args: FieldTable = [("after".to_owned(), after)].into_iter().collect();
            Page::parse(&args).and_then(|p| p.cursor(&[KeyKind::Number]))
        };
        assert_eq!(
            ids(FieldValue::String("42".into())).unwrap(),
            Some(vec![KeyPart::Number(42)])
        );
        assert_eq!(
            ids(FieldValue::Int(9)).unwrap(),
            Some(vec![KeyPart::Number(9)])
        );
        assert!(ids(FieldValue::String("x".into())).is_err());
        assert!(ids(FieldValue::Int(-1)).is_err());
    }

    #[test]
    fn entries_after_a_short_cursor_are_those_whose_prefix_sorts_after_it() {
        let t = |s: &str| KeyPart::Text(s.to_owned());
        let items = vec![
            vec![t("a"), t("x")],
            vec![t("b"), t("x")],
            vec![t("b"), t("y")],
            vec![t("c"), t("x")],
        ];
        let page = |after: &str| {
            let args: FieldTable = [("after".to_owned(), FieldValue::String(after.into()))]
                .into_iter()
                .collect();
            Page::parse(&args)
                .and_then(|p| p.by_key(&[KeyKind::Text; 2], items.clone(), Clone::clone))
                .unwrap()
        };
        assert_eq!(page(r#"["b"]"#), [vec![t("c"), t("x")]]);
        assert_eq!(page("b"), [vec![t("c"), t("x")]]);
        assert_eq!(page(r#"["b","x"]"#), items[2..]);
    }
    use crate::admin_types::{
        BindingInfo, ConnectionInfo, ConsumerInfo, DeadLetterInfo, Definitions, DeleteResult,
        ExchangeInfo, ImportSummary, PurgeResult, QueueInfo, ReplayResult, Status,
    };
    use crate::broker::BrokerConfig;
    use serde::de::DeserializeOwned;
    use warren_protocol::{
        ExchangeDeclare, ExchangeKind, Properties, Publish, QueueBind, QueueDeclare,
    };

    fn args<const N: usize>(pairs: [(&str, FieldValue); N]) -> FieldTable {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::String(s.to_owned())
    }

    /// Runs `command` on the server code path and decodes its reply as `T`; checks that
    /// encoding the typed value again gives the very bytes the server sent (no field lost,
    /// keys sorted).
    async fn typed<T: DeserializeOwned + Serialize>(
        b: &Broker,
        session: &Session,
        command: &str,
        arguments: FieldTable,
    ) -> T {
        let body = b
            .admin(session, command, &arguments)
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let value: T = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{command} does not decode: {e}"));
        assert_eq!(
            encode(&value).expect("encodes"),
            body,
            "{command}: the typed reply re-encodes differently"
        );
        value
    }

    #[tokio::test]
    async fn every_reply_decodes_into_its_type_and_re_encodes_byte_for_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = Broker::open(BrokerConfig {
            data_dir: dir.path().to_owned(),
            queue_window_bytes: crate::broker::DEFAULT_QUEUE_WINDOW_BYTES,
            consumer_timeout: None,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            disk_free_limit: 0,
            limits: Default::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_quick_repair: false,
            recovery: Default::default(),
        })
        .await
        .expect("opening a broker");
        let (tx, _rx) = crate::broker::outbox::outbox();
        let s = b.new_session(
            "127.0.0.1:1".into(),
            crate::broker::access::Principal::internal(),
            tx,
        );
        b.declare_exchange(
            &s,
            ExchangeDeclare {
                name: "logs".into(),
                kind: ExchangeKind::Topic,
                durable: true,
                passive: false,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            },
        )
        .await
        .expect("declare exchange");
        let mut queue_args = FieldTable::new();
        queue_args.insert("x-max-length".into(), FieldValue::Int(10));
        b.declare_queue(
            &s,
            QueueDeclare {
                name: "jobs".into(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: queue_args,
            },
        )
        .await
        .expect("declare queue");
        b.bind(
            &s,
            QueueBind {
                queue: "jobs".into(),
                exchange: "logs".into(),
                routing_key: "#".into(),
                arguments: FieldTable::new(),
            },
        )
        .await
        .expect("bind");
        for (i, body) in [&b"text"[..], &[0xff, 0x00]].into_iter().enumerate() {
            let properties = Properties {
                message_id: Some(format!("m-{i}")),
                ..Properties::default()
            };
            let publish = Publish {
                exchange: "logs".into(),
                routing_key: "a.b".into(),
                mandatory: false,
                no_confirm: false,
                properties,
                body: Bytes::copy_from_slice(body),
            };
            b.publish(&s, 1, publish).await.expect("publish");
        }
        // The messages reach the queue after their commit.
        let peek = args([("queue", text("jobs"))]);
        let mut peeked: Vec<DeadLetterInfo> = Vec::new();
        for _ in 0..200 {
            peeked = typed(&b, &s, "queue.peek", peek.clone()).await;
            if peeked.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(peeked.len(), 2);
        assert_eq!(peeked[0].body, "text");
        assert_eq!(peeked[1].body_encoding.as_deref(), Some("base64"));
        assert_eq!(peeked[1].reason, None);

        let status: Status = typed(&b, &s, "status", FieldTable::new()).await;
        assert_eq!(status.queues, 1);
        assert_eq!(status.totals.published, 2);
        assert_eq!(status.totals.dead_lettered.len(), 4);
        let queues: Vec<QueueInfo> = typed(&b, &s, "queue.list", FieldTable::new()).await;
        assert_eq!(queues.len(), 1);
        assert_eq!(queues[0].max_length, Some(10));
        let queue: QueueInfo = typed(&b, &s, "queue.inspect", peek.clone()).await;
        assert_eq!(queue.messages_ready, 2);
        let exchanges: Vec<ExchangeInfo> = typed(&b, &s, "exchange.list", FieldTable::new()).await;
        assert_eq!(exchanges[0].name, "");
        assert!(exchanges
            .iter()
            .any(|e| e.name == "logs" && e.kind == "topic"));
        let bindings: Vec<BindingInfo> = typed(&b, &s, "binding.list", peek.clone()).await;
        assert_eq!(bindings.len(), 1);
        let connections: Vec<ConnectionInfo> =
            typed(&b, &s, "connection.list", FieldTable::new()).await;
        assert_eq!(connections[0].peer, "127.0.0.1:1");
        let consumers: Vec<ConsumerInfo> = typed(&b, &s, "consumer.list", FieldTable::new()).await;
        assert!(consumers.is_empty());
        let dead: Vec<DeadLetterInfo> = typed(&b, &s, "dlq.peek", peek.clone()).await;
        assert_eq!(dead, peeked);
        let definitions: Definitions = typed(&b, &s, "definitions.export", FieldTable::new()).await;
        assert_eq!(definitions.queues.len(), 1);
        let document = serde_json::to_string(&definitions).expect("encodes");
        let imported: ImportSummary = typed(
            &b,
            &s,
            "definitions.import",
            args([("definitions", text(&document))]),
        )
        .await;
        assert_eq!(imported.queues_created, 0);
        let replayed: ReplayResult = typed(
            &b,
            &s,
            "dlq.replay",
            args([("queue", text("jobs")), ("limit", FieldValue::Int(0))]),
        )
        .await;
        assert_eq!(
            replayed,
            ReplayResult {
                moved: 0,
                unroutable: 0
            }
        );
        let deleted: DeleteResult = typed(
            &b,
            &s,
            "message.delete",
            args([("queue", text("jobs")), ("id", text("m-0"))]),
        )
        .await;
        assert_eq!(deleted.deleted, 1);
        let purged: PurgeResult = typed(&b, &s, "dlq.purge", peek).await;
        assert_eq!(purged.purged, 1);
        b.shutdown().await;
    }
}
