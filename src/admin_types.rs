//! The results of the admin commands (PROTOCOL.md §15) as typed structs, shared by the
//! server, which builds them (`broker/admin/`), and the client and CLI, which read them.
//! JSON is only their encoding in the `AdminOk` frame.
//!
//! Plain data only: nothing here knows the broker, so the client can use these types
//! without pulling broker internals in. Field names are the protocol's (§15); where a Rust
//! name differs, `#[serde(rename)]` keeps the wire name.
//!
//! Compatibility, as §15 promises: the server may add fields, so decoding ignores fields it
//! does not know (no `deny_unknown_fields`); a field this version expects but the reply
//! lacks is an error ([`crate::client::ClientError::BadAdminReply`]), not a silent `-` in a
//! table. A field that may be `null` is an `Option` that must still be present
//! (`deserialize_with = "Option::deserialize"`: serde would otherwise read a missing
//! `Option` as `None`, and a renamed `death_count` would print `-` again). A field added
//! later must be `#[serde(default)]` so that newer clients still read older servers.
//!
//! The server sends the keys of every object in sorted order (it encodes through
//! `serde_json::Value`, whose maps are sorted), whatever the field order here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A field table (queue, exchange or binding arguments, message headers) as JSON, by the
/// rules of [`crate::json::table_json`].
pub type JsonTable = serde_json::Map<String, Value>;

/// One field of the key a listing is sorted and paged by (see [`Listed`]).
///
/// Untagged in JSON: a number or a string, as the `after` cursor of a composite key
/// writes it (`["logs","jobs","queue","a.#","{}"]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyPart {
    /// A number, compared as one (connection ids: 9 sorts before 10).
    Number(u64),
    /// Text, compared byte-wise (names).
    Text(String),
}

/// What each field of a listing's key is, so that a cursor typed by hand (`--after 42`)
/// is read as the listing means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A [`KeyPart::Number`].
    Number,
    /// A [`KeyPart::Text`].
    Text,
}

/// An entry of a paged listing: the key the listing is sorted by, which is also the
/// cursor (`after`) of the next page. Server and client share it, so a client pages with
/// exactly the key the server sorted by.
pub trait Listed {
    /// The fields of the key, most significant first (`name` for queues; source,
    /// destination, destination type, routing key and arguments for bindings).
    const KEY: &'static [KeyKind];

    /// This entry's key; unique within its listing.
    fn page_key(&self) -> Vec<KeyPart>;
}

/// The `after` argument that asks for the entries after `key`: a one-field key as itself
/// (a name, or a number), a longer one as the JSON array of its fields.
pub fn cursor_text(key: &[KeyPart]) -> String {
    match key {
        [KeyPart::Text(t)] => t.clone(),
        [KeyPart::Number(n)] => n.to_string(),
        longer => serde_json::to_string(longer).unwrap_or_default(),
    }
}

fn text_key(name: &str) -> Vec<KeyPart> {
    vec![KeyPart::Text(name.to_owned())]
}

impl Listed for QueueInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text];
    fn page_key(&self) -> Vec<KeyPart> {
        text_key(&self.name)
    }
}

impl Listed for ExchangeInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text];
    fn page_key(&self) -> Vec<KeyPart> {
        text_key(&self.name)
    }
}

impl Listed for BindingInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text; 5];
    /// Source, destination, destination type, routing key, and the arguments as their
    /// JSON text (keys sorted): two bindings differing only in arguments are two bindings.
    fn page_key(&self) -> Vec<KeyPart> {
        vec![
            KeyPart::Text(self.source.clone()),
            KeyPart::Text(self.destination.clone()),
            KeyPart::Text(self.destination_type.clone()),
            KeyPart::Text(self.routing_key.clone()),
            KeyPart::Text(serde_json::to_string(&self.arguments).unwrap_or_default()),
        ]
    }
}

impl Listed for ConnectionInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Number];
    fn page_key(&self) -> Vec<KeyPart> {
        vec![KeyPart::Number(self.id)]
    }
}

impl Listed for ConsumerInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text, KeyKind::Text, KeyKind::Number];
    /// Queue (`""` while it is being deleted), tag, connection: a tag is unique only on
    /// its connection.
    fn page_key(&self) -> Vec<KeyPart> {
        vec![
            KeyPart::Text(self.queue.clone().unwrap_or_default()),
            KeyPart::Text(self.tag.clone()),
            KeyPart::Number(self.connection),
        ]
    }
}

impl Listed for UserInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text];
    fn page_key(&self) -> Vec<KeyPart> {
        text_key(&self.name)
    }
}

impl Listed for VhostInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text];
    fn page_key(&self) -> Vec<KeyPart> {
        text_key(&self.name)
    }
}

impl Listed for PermissionInfo {
    const KEY: &'static [KeyKind] = &[KeyKind::Text, KeyKind::Text];
    /// User, then virtual host.
    fn page_key(&self) -> Vec<KeyPart> {
        vec![
            KeyPart::Text(self.user.clone()),
            KeyPart::Text(self.vhost.clone()),
        ]
    }
}

/// `status`: the server at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The server's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// The addresses it listens on, e.g. `warren://127.0.0.1:5680`.
    pub listeners: Vec<String>,
    /// Its data directory.
    pub data_dir: String,
    /// Size of the store file in bytes.
    pub store_bytes: u64,
    /// Resident memory of the server process in bytes (0 where it cannot be read).
    pub memory_bytes: u64,
    /// CPU time the server process has used since it started, user plus system, in seconds
    /// (`warren bench` reads it before and after a run). Absent from older servers: 0.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Bytes the daemon has allocated (the memory budget's measure; 0 without a budget).
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// The memory budget, `--memory-limit`, in bytes (0: none).
    #[serde(default)]
    pub memory_limit_bytes: u64,
    /// Free bytes on the data directory's filesystem at the last check (0 when the disk
    /// alarm is off, as nothing checks then).
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// Resource alarms that are on (`disk`), blocking publishers; empty when none is.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Open client connections.
    pub connections: u64,
    /// Consumers on all queues.
    pub consumers: u64,
    /// Queues.
    pub queues: u64,
    /// Exchanges, the built-in ones included (not the default exchange).
    pub exchanges: u64,
    /// Ready messages in all queues.
    pub messages_ready: u64,
    /// Delivered, not yet settled messages in all queues.
    pub messages_unacked: u64,
    /// Messages waiting out a delay in all queues.
    pub messages_delayed: u64,
    /// Messages entering queues per second, summed over queues.
    pub publish_rate: f64,
    /// Deliveries per second, summed over queues.
    pub deliver_rate: f64,
    /// Acks per second, summed over queues.
    pub ack_rate: f64,
    /// Broker counters since start.
    pub totals: StatusTotals,
    /// Store writer counters since start.
    pub store: StoreTotals,
}

/// `status.totals`: the broker's counters since it started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusTotals {
    /// Publishes accepted.
    pub published: u64,
    /// Publishes routed to at least one queue.
    pub routed: u64,
    /// Publishes no queue took.
    pub unroutable: u64,
    /// Publishes confirmed as duplicates (`x-message-deduplication`): stored nowhere.
    /// Absent from servers before deduplication: 0.
    #[serde(default)]
    pub duplicates: u64,
    /// Unroutable mandatory publishes returned.
    pub returned: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries nacked or rejected with requeue.
    pub requeued: u64,
    /// Messages that expired (dead-lettered or dropped).
    pub expired: u64,
    /// Messages dead-lettered, by reason (`rejected`, `expired`, `maxlen`,
    /// `delivery_limit`).
    pub dead_lettered: BTreeMap<String, u64>,
    /// Dead letters dropped: their dead-letter exchange is missing, they route nowhere, or
    /// they would cycle.
    pub dead_letters_dropped: u64,
    /// Messages accepted for later release (`x-delay`, `x-deliver-at`).
    pub scheduled: u64,
    /// Consumers cancelled for holding a delivery past their consumer timeout.
    pub consumer_timeouts: u64,
}

/// `status.store`: the store writer's counters since the server started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreTotals {
    /// Write transactions committed.
    pub commits: u64,
    /// Messages written (one per stored publish).
    pub messages_written: u64,
    /// Operations applied in those commits.
    pub operations_committed: u64,
    /// Total time spent committing, in seconds.
    pub commit_seconds_total: f64,
}

/// A queue object: one entry of `queue.list`, or the answer to `queue.inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Survives a restart.
    pub durable: bool,
    /// Owned by one connection.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Its arguments as declared.
    pub arguments: JsonTable,
    /// `x-dead-letter-exchange`, parsed (`""` is the default exchange).
    #[serde(deserialize_with = "Option::deserialize")]
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`, parsed.
    #[serde(deserialize_with = "Option::deserialize")]
    pub dead_letter_routing_key: Option<String>,
    /// `x-message-ttl` in milliseconds.
    #[serde(deserialize_with = "Option::deserialize")]
    pub message_ttl_ms: Option<u64>,
    /// `x-max-length`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub max_length_bytes: Option<u64>,
    /// The overflow mode in force (`drop-head` unless `x-overflow` says otherwise).
    pub overflow: String,
    /// `x-delivery-limit`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub delivery_limit: Option<u32>,
    /// Ready messages.
    pub messages_ready: u64,
    /// Delivered, not yet settled messages.
    pub messages_unacked: u64,
    /// Messages waiting out a delay.
    pub messages_delayed: u64,
    /// Bytes of the ready messages' bodies.
    pub message_bytes: u64,
    /// Attached consumers.
    pub consumers: u32,
    /// Messages entering the queue per second.
    pub publish_rate: f64,
    /// Deliveries per second.
    pub deliver_rate: f64,
    /// Acks per second.
    pub ack_rate: f64,
    /// Messages that entered the queue since it was created or recovered.
    pub published_total: u64,
    /// Deliveries (to consumers and by `get`) since then.
    pub delivered_total: u64,
    /// Acks since then.
    pub acked_total: u64,
    /// Messages dead-lettered out of this queue since then.
    pub dead_lettered_total: u64,
    /// When these numbers were read, in milliseconds since the Unix epoch.
    pub as_of_ms: u64,
    /// `classic` or `stream` (`x-queue-type`). Absent from older servers: classic.
    #[serde(rename = "type", default = "classic")]
    pub queue_type: String,
    /// Its messages are still being read back from the store after a restart: the counts
    /// above hold only those read so far (and those published since). Absent from older
    /// servers: false.
    #[serde(default)]
    pub recovering: bool,
}

fn classic() -> String {
    "classic".to_owned()
}

/// The answer to `stream.info`: what a stream holds and how it is trimmed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Entries held.
    pub messages: u64,
    /// The first offset held (`None`: the stream is empty).
    #[serde(deserialize_with = "Option::deserialize")]
    pub first_offset: Option<u64>,
    /// The last offset held (`None`: the stream is empty).
    #[serde(deserialize_with = "Option::deserialize")]
    pub last_offset: Option<u64>,
    /// The offset the next message gets.
    pub next_offset: u64,
    /// When the first entry held was appended, ms since the Unix epoch.
    #[serde(deserialize_with = "Option::deserialize")]
    pub first_timestamp_ms: Option<u64>,
    /// When the last entry was appended, ms since the Unix epoch.
    #[serde(deserialize_with = "Option::deserialize")]
    pub last_timestamp_ms: Option<u64>,
    /// Body bytes held.
    pub bytes: u64,
    /// Retention chunks held.
    pub chunks: u64,
    /// `x-max-length-bytes`: trimmed past this many bytes.
    #[serde(deserialize_with = "Option::deserialize")]
    pub max_length_bytes: Option<u64>,
    /// `x-max-age` in milliseconds: chunks older than this are trimmed.
    #[serde(deserialize_with = "Option::deserialize")]
    pub max_age_ms: Option<u64>,
    /// The body bytes after which a retention chunk closes.
    pub chunk_bytes: u64,
    /// Attached consumers.
    pub consumers: u32,
    /// Named consumers with a stored position.
    pub named_consumers: Vec<StreamConsumerInfo>,
    /// Named producers with their last stored sequence, by name (absent from older servers).
    #[serde(default)]
    pub producers: Vec<StreamProducerInfo>,
}

/// A named stream producer (`x-producer-name`) and the last sequence stored for it: a
/// publish from it numbered at or below this is a duplicate (docs/deduplication.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamProducerInfo {
    /// Its name.
    pub name: String,
    /// The last `x-producer-sequence` stored.
    pub sequence: u64,
}

/// A named stream consumer's stored position: one entry of `stream.consumers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamConsumerInfo {
    /// Its name (`x-stream-consumer-name`).
    pub name: String,
    /// The offset it resumes at: one past everything it has settled.
    pub offset: u64,
    /// Entries between its offset and the end of the stream.
    pub lag: u64,
    /// Whether a consumer with this name is attached now.
    pub attached: bool,
}

/// One entry of `exchange.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExchangeInfo {
    /// Exchange name; `""` is the default exchange.
    pub name: String,
    /// How it routes: `direct`, `fanout`, `topic` or `headers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding as a source goes (absent from older servers' lists).
    #[serde(default)]
    pub auto_delete: bool,
    /// Clients cannot publish to it (absent from older servers' lists).
    #[serde(default)]
    pub internal: bool,
    /// Built in (`""` and `amq.*`): cannot be declared or deleted.
    pub builtin: bool,
    /// Its arguments as declared.
    pub arguments: JsonTable,
}

/// One entry of `binding.list` (and of an exported definitions document).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindingInfo {
    /// The exchange the binding routes from.
    pub source: String,
    /// The queue or exchange it routes to.
    pub destination: String,
    /// What `destination` is: `queue` or `exchange`.
    pub destination_type: String,
    /// The binding key.
    pub routing_key: String,
    /// Its arguments (for headers exchanges, what to match).
    pub arguments: JsonTable,
}

/// One entry of `connection.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionInfo {
    /// The connection's id (`consumer.list` refers to it).
    pub id: u64,
    /// The client's address.
    pub peer: String,
    /// When it connected, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Its consumers.
    pub consumers: u64,
    /// Deliveries it holds unsettled.
    pub unacked: u64,
    /// Messages it has published.
    pub published: u64,
    /// The user it logged in as (absent from servers before users).
    #[serde(default)]
    pub user: String,
    /// The virtual host it opened (absent from servers before virtual hosts).
    #[serde(default)]
    pub vhost: String,
    /// The listener it came through: `native`, `native-tls`, `amqp` or `amqps` (absent
    /// from servers before the AMQP listener, all of whose connections were native).
    #[serde(default = "native")]
    pub protocol: String,
    /// The client library's name from an AMQP client's `client-properties` (`product`).
    #[serde(default)]
    pub client_product: Option<String>,
    /// Its version (`version` in `client-properties`).
    #[serde(default)]
    pub client_version: Option<String>,
}

fn native() -> String {
    "native".to_owned()
}

/// One entry of `vhost.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VhostInfo {
    /// Name.
    pub name: String,
    /// How many queues it has.
    pub queues: u64,
}

/// One entry of `user.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Whether it has a password (a user imported without one cannot log in).
    pub has_password: bool,
}

/// One entry of `permission.list`: what a user may do in a virtual host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PermissionInfo {
    /// The user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// Regular expression over the names of queues and exchanges it may declare and delete.
    pub configure: String,
    /// Regular expression over the names it may publish to (exchanges) and bind (queues).
    pub write: String,
    /// Regular expression over the names it may consume from (queues) and bind from
    /// (exchanges).
    pub read: String,
}

/// One entry of `consumer.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsumerInfo {
    /// The consumer tag.
    pub tag: String,
    /// The id of its connection.
    pub connection: u64,
    /// Its queue; `None` while the queue is being deleted.
    #[serde(deserialize_with = "Option::deserialize")]
    pub queue: Option<String>,
    /// Unacked deliveries it may hold (0: no limit).
    pub prefetch: u32,
    /// Deliveries are settled when sent.
    pub no_ack: bool,
    /// The queue's only consumer.
    pub exclusive: bool,
    /// Deliveries it holds unsettled.
    pub unacked: u32,
    /// Whether it receives: false only for a consumer waiting its turn on a
    /// single-active-consumer queue. (Absent from older servers' replies: true.)
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

/// A dead-letter object: one ready message of a queue, as `dlq.peek` and `queue.peek`
/// show it. The fields read from `x-death` are `None` for a message without one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetterInfo {
    /// Position among the queue's ready messages; 0 is the head.
    pub position: u64,
    /// The `message_id` property.
    #[serde(deserialize_with = "Option::deserialize")]
    pub message_id: Option<String>,
    /// Reason of the newest death (`rejected`, `expired`, `maxlen`, `delivery_limit`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub reason: Option<String>,
    /// Queue of the newest death: the queue it died in.
    #[serde(deserialize_with = "Option::deserialize")]
    pub source_queue: Option<String>,
    /// Exchange of its first death: where `dlq.replay` sends it.
    #[serde(deserialize_with = "Option::deserialize")]
    pub original_exchange: Option<String>,
    /// Routing key of its first death.
    #[serde(deserialize_with = "Option::deserialize")]
    pub original_routing_key: Option<String>,
    /// `count` of the newest death.
    #[serde(deserialize_with = "Option::deserialize")]
    pub death_count: Option<i64>,
    /// `time` of the newest death, in milliseconds since the Unix epoch.
    #[serde(deserialize_with = "Option::deserialize")]
    pub death_time_ms: Option<i64>,
    /// Failed deliveries of it from this queue so far (`x-delivery-count`).
    pub delivery_count: u32,
    /// Times it was taken from this queue and given back so far (`x-acquired-count`).
    /// Absent from the answers of servers older than the count: 0.
    #[serde(default)]
    pub acquired_count: u32,
    /// Body size in bytes.
    pub size: u64,
    /// The exchange it was last published to.
    pub exchange: String,
    /// The routing key it was last published with.
    pub routing_key: String,
    /// Its headers, `x-death` included.
    pub headers: JsonTable,
    /// The first 64 bytes of the body as text (lossy), `…` when cut.
    pub body_preview: String,
    /// The body: UTF-8 text, or base64 when `body_encoding` is `base64`.
    pub body: String,
    /// `Some("base64")` when `body` is base64; `None` for text.
    #[serde(deserialize_with = "Option::deserialize")]
    pub body_encoding: Option<String>,
}

/// `dlq.replay`: what moved and what stayed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayResult {
    /// Messages published again and removed from the queue.
    pub moved: u64,
    /// Messages that routed nowhere and stayed.
    pub unroutable: u64,
}

/// `dlq.purge`: how many dead letters were removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeResult {
    /// Messages removed.
    pub purged: u64,
}

/// `message.delete`: how many ready messages had the id and were removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteResult {
    /// Messages removed.
    pub deleted: u64,
}

/// `definitions.export`: the topology as one document (what `definitions.import` reads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Definitions {
    /// Version of the server that wrote it.
    pub warren_version: String,
    /// Exchanges, built-in ones left out, by name.
    pub exchanges: Vec<ExchangeDefinition>,
    /// Queues, exclusive ones left out, by name.
    pub queues: Vec<QueueDefinition>,
    /// Bindings to the exported queues, as `binding.list` shows them.
    pub bindings: Vec<BindingInfo>,
    /// Users, with their password hashes (server-wide; absent from older exports).
    #[serde(default)]
    pub users: Vec<UserDefinition>,
    /// Virtual hosts (server-wide; absent from older exports).
    #[serde(default)]
    pub vhosts: Vec<VhostDefinition>,
    /// Permissions (server-wide; absent from older exports).
    #[serde(default)]
    pub permissions: Vec<PermissionInfo>,
}

/// A user in a definitions document, in RabbitMQ's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserDefinition {
    /// User name.
    pub name: String,
    /// The password hash: for Warren an argon2id PHC string; empty for a user without a
    /// password. A RabbitMQ export has base64 of salt and SHA-256 here, which Warren cannot
    /// verify (the user is imported without a password, with a warning).
    pub password_hash: String,
    /// `argon2id` for Warren's hashes; RabbitMQ writes `rabbit_password_hashing_sha256`.
    pub hashing_algorithm: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A virtual host in a definitions document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VhostDefinition {
    /// Its name.
    pub name: String,
}

/// An exchange in a definitions document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExchangeDefinition {
    /// Exchange name.
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding as a source goes (RabbitMQ's `auto_delete`; absent
    /// from older Warren exports, read as false).
    #[serde(default)]
    pub auto_delete: bool,
    /// Clients cannot publish to it (RabbitMQ's `internal`; absent from older Warren
    /// exports, read as false).
    #[serde(default)]
    pub internal: bool,
    /// Its arguments.
    pub arguments: JsonTable,
}

/// A queue in a definitions document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueDefinition {
    /// Queue name.
    pub name: String,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Its arguments.
    pub arguments: JsonTable,
}

/// `definitions.import`: what the import created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportSummary {
    /// Exchanges that did not exist before.
    pub exchanges_created: u64,
    /// Queues that did not exist before.
    pub queues_created: u64,
    /// Bindings in the document (declaring an existing binding changes nothing).
    pub bindings: u64,
    /// Users that did not exist before (existing ones take the file's tags, and its password
    /// hash when Warren can verify it).
    #[serde(default)]
    pub users_created: u64,
    /// Virtual hosts that did not exist before.
    #[serde(default)]
    pub vhosts_created: u64,
    /// Permissions set or changed (each replaces what its user had in its virtual host;
    /// one already as in the file is not counted).
    #[serde(default)]
    pub permissions_set: u64,
    /// What was imported other than asked, e.g. a user whose RabbitMQ password hash
    /// Warren cannot verify, imported without a password.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// Decodes `sample` (a reply as §15 documents it) as `T`, and checks that encoding it
    /// again gives the same JSON: every documented field has a home, under its wire name.
    fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(sample: Value) {
        let typed: T = serde_json::from_value(sample.clone()).expect("the sample decodes");
        assert_eq!(serde_json::to_value(&typed).expect("encodes"), sample);
        let again: T =
            serde_json::from_str(&serde_json::to_string(&typed).expect("encodes")).expect("");
        assert_eq!(again, typed);
    }

    fn queue() -> Value {
        json!({
            "name": "work", "durable": true, "exclusive": false, "auto_delete": false,
            "arguments": {"x-dead-letter-exchange": "", "x-message-ttl": 5000},
            "dead_letter_exchange": "", "dead_letter_routing_key": null,
            "message_ttl_ms": 5000, "max_length": null, "max_length_bytes": null,
            "overflow": "drop-head", "delivery_limit": 3,
            "messages_ready": 3, "messages_unacked": 1, "messages_delayed": 0,
            "message_bytes": 2048, "consumers": 1,
            "publish_rate": 0.5, "deliver_rate": 0.0, "ack_rate": 1.25,
            "published_total": 4, "delivered_total": 1, "acked_total": 0,
            "dead_lettered_total": 0, "as_of_ms": 1_714_564_800_000_u64, "type": "classic", "recovering": false,
        })
    }

    fn dead_letter() -> Value {
        json!({
            "position": 0, "message_id": "m-1", "reason": "rejected", "source_queue": "work",
            "original_exchange": "", "original_routing_key": "work", "death_count": 2,
            "death_time_ms": 1_714_564_800_000_i64, "delivery_count": 0, "acquired_count": 0, "size": 5,
            "exchange": "dlx", "routing_key": "work",
            "headers": {"x-death": [{"count": 2, "queue": "work", "reason": "rejected"}]},
            "body_preview": "hello", "body": "hello", "body_encoding": null,
        })
    }

    #[test]
    fn status_round_trips() {
        round_trips::<Status>(json!({
            "version": "0.1.0", "uptime_secs": 133, "listeners": ["warren://127.0.0.1:5680"],
            "data_dir": "/var/lib/warren", "store_bytes": 1_572_864, "memory_bytes": 10_485_760,
            "cpu_seconds": 2.5, "disk_free_bytes": 44_000_000_000_u64, "alarms": ["disk"],
            "memory_used_bytes": 9_000_000, "memory_limit_bytes": 14_000_000_000_u64,
            "connections": 1, "consumers": 0, "queues": 2, "exchanges": 5,
            "messages_ready": 5, "messages_unacked": 0, "messages_delayed": 0,
            "publish_rate": 1.25, "deliver_rate": 0.0, "ack_rate": 0.0,
            "totals": {
                "published": 5, "routed": 5, "unroutable": 0, "duplicates": 0, "returned": 0,
                "acked": 0, "requeued": 0, "expired": 1,
                "dead_lettered": {"delivery_limit": 0, "expired": 1, "maxlen": 0, "rejected": 0},
                "dead_letters_dropped": 0, "scheduled": 0, "consumer_timeouts": 0,
            },
            "store": {"commits": 9, "messages_written": 5, "operations_committed": 12,
                      "commit_seconds_total": 0.004_5},
        }));
    }

    #[test]
    fn listings_round_trip() {
        round_trips::<QueueInfo>(queue());
        round_trips::<Vec<ExchangeInfo>>(json!([
            {"name": "", "type": "direct", "durable": true, "auto_delete": false,
             "internal": false, "builtin": true, "arguments": {}},
            {"name": "logs", "type": "topic", "durable": false, "auto_delete": true,
             "internal": true, "builtin": false, "arguments": {"alternate-exchange": "ae"}},
        ]));
        round_trips::<Vec<BindingInfo>>(json!([
            {"source": "h", "destination": "q", "destination_type": "queue",
             "routing_key": "", "arguments": {"x-match": "all", "n": 1}},
        ]));
        round_trips::<Vec<ConnectionInfo>>(json!([
            {"id": 7, "peer": "127.0.0.1:50000", "connected_at_ms": 1_714_564_800_000_u64,
             "consumers": 1, "unacked": 2, "published": 30, "user": "app", "vhost": "/",
             "protocol": "amqps", "client_product": "pika", "client_version": "1.3.2"},
        ]));
        round_trips::<Vec<ConsumerInfo>>(json!([
            {"tag": "ctag-1", "connection": 3, "queue": "jobs", "prefetch": 10,
             "no_ack": false, "exclusive": false, "unacked": 4, "active": true},
            {"tag": "ctag-2", "connection": 3, "queue": null, "prefetch": 0,
             "no_ack": true, "exclusive": true, "unacked": 0, "active": true},
            {"tag": "ctag-3", "connection": 4, "queue": "jobs", "prefetch": 0,
             "no_ack": false, "exclusive": false, "unacked": 0, "active": false},
        ]));
    }

    #[test]
    fn dead_letters_round_trip_with_and_without_x_death() {
        let mut plain = dead_letter();
        for field in [
            "message_id",
            "reason",
            "source_queue",
            "original_exchange",
            "original_routing_key",
            "death_count",
            "death_time_ms",
        ] {
            plain[field] = Value::Null;
        }
        plain["headers"] = json!({});
        plain["body"] = json!("/wCA");
        plain["body_encoding"] = json!("base64");
        round_trips::<Vec<DeadLetterInfo>>(json!([dead_letter(), plain]));
    }

    #[test]
    fn results_round_trip() {
        round_trips::<ReplayResult>(json!({"moved": 42, "unroutable": 3}));
        round_trips::<PurgeResult>(json!({"purged": 7}));
        round_trips::<DeleteResult>(json!({"deleted": 1}));
        round_trips::<ImportSummary>(json!({
            "exchanges_created": 1, "queues_created": 2, "bindings": 3,
            "users_created": 1, "vhosts_created": 0, "permissions_set": 2,
            "warnings": ["user 'legacy': ..."],
        }));
        round_trips::<Definitions>(json!({
            "warren_version": "0.1.0",
            "exchanges": [{"name": "logs", "type": "topic", "durable": true,
                           "auto_delete": false, "internal": true, "arguments": {}}],
            "queues": [{"name": "jobs", "durable": true, "auto_delete": false,
                        "arguments": {"x-max-length": 10}}],
            "bindings": [{"source": "logs", "destination": "jobs", "destination_type": "queue",
                          "routing_key": "#", "arguments": {}}],
            "users": [{"name": "guest", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                       "hashing_algorithm": "argon2id", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}],
            "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*",
                             "read": ".*"}],
        }));
        // Replies of servers from before users and virtual hosts still decode.
        let old: ImportSummary = serde_json::from_value(
            json!({"exchanges_created": 1, "queues_created": 2, "bindings": 3}),
        )
        .expect("an older import summary decodes");
        assert!(old.warnings.is_empty() && old.users_created == 0);
        let old: Definitions = serde_json::from_value(json!({
            "warren_version": "0.1.0", "exchanges": [], "queues": [], "bindings": [],
        }))
        .expect("an older export decodes");
        assert!(old.users.is_empty());
        // Exchanges exported before auto-delete and internal existed read as neither.
        let old: ExchangeDefinition = serde_json::from_value(
            json!({"name": "logs", "type": "topic", "durable": true, "arguments": {}}),
        )
        .expect("an older exchange decodes");
        assert!(!old.auto_delete && !old.internal);
    }

    /// §15: servers may add fields; a client ignores those it does not know.
    #[test]
    fn unknown_fields_are_ignored() {
        let mut newer = queue();
        newer["some_future_field"] = json!({"x": 1});
        let typed: QueueInfo = serde_json::from_value(newer).expect("decodes");
        assert_eq!(typed.name, "work");
    }

    /// The point of the types: a renamed or missing field is an error, not a blank cell.
    #[test]
    fn a_missing_or_mistyped_field_is_an_error() {
        let mut renamed = dead_letter();
        let count = renamed
            .as_object_mut()
            .and_then(|m| m.remove("death_count"))
            .expect("has death_count");
        renamed["deaths"] = count;
        // A nullable field must be there too (`null`, not absent).
        let err = serde_json::from_value::<DeadLetterInfo>(renamed).unwrap_err();
        assert!(err.to_string().contains("death_count"), "{err}");
        let mut missing = queue();
        missing.as_object_mut().map(|m| m.remove("messages_ready"));
        let err = serde_json::from_value::<QueueInfo>(missing).unwrap_err();
        assert!(err.to_string().contains("messages_ready"), "{err}");
        let mut mistyped = queue();
        mistyped["durable"] = json!("yes");
        assert!(serde_json::from_value::<QueueInfo>(mistyped).is_err());
        assert!(serde_json::from_value::<ReplayResult>(json!({})).is_err());
    }
}
