//! Every redb table Warren uses, with its key layout and value encoding.
//!
//! Values are `&[u8]` in Warren's own encoding (see [`super::codec`]), each starting with a
//! version byte and decoded fallibly: a corrupt record becomes a [`super::StoreError::Corrupt`],
//! never a panic.

use redb::TableDefinition;

/// The on-disk schema version, kept under `schema_version` in [`META`].
pub const SCHEMA_VERSION: u64 = 1;

/// `&str → u64`: store-wide values (`schema_version`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `vhost name → VhostRecord`: virtual hosts.
pub const VHOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("vhosts");

/// `entity key → ExchangeRecord`: durable exchanges. The key is the name in `/` and
/// `vhost NUL name` elsewhere ([`super::codec::entity_key`]).
pub const EXCHANGES: TableDefinition<&str, &[u8]> = TableDefinition::new("exchanges");

/// `entity key → QueueRecord`: durable queues, with their numeric id and arguments; keyed
/// like [`EXCHANGES`].
pub const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");

/// `encoded BindingRecord → ()`: durable bindings (source and destination both durable). The
/// record is its own key because a binding's identity is all of its fields.
pub const BINDINGS: TableDefinition<&[u8], ()> = TableDefinition::new("bindings");

/// `message id → MessageRecord`: one copy of each stored message, however many queues hold it.
pub const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");

/// `message id → u32`: how many `QUEUE_MESSAGES` rows point at the message. The message row is
/// deleted in the same transaction that drops the count to zero.
pub const MESSAGE_REFS: TableDefinition<u64, u32> = TableDefinition::new("message_refs");

/// `(queue id, message id) → (delivery count, body size, expires at, ready at)`: the messages
/// each durable queue holds. The delivery count is the failed deliveries
/// (`x-delivery-count`); before acquisitions were counted apart it was every requeue. Message ids grow monotonically, so a range scan over one queue id
/// yields its FIFO order. `expires at` (ms since the epoch, 0 = never) is fixed when the message
/// enters the queue; `ready at` (0 = ready now) holds a requeue delay.
pub const QUEUE_MESSAGES: TableDefinition<(u64, u64), QueueEntryValue> =
    TableDefinition::new("queue_messages");

/// The value of a [`QUEUE_MESSAGES`] row: delivery count, body size, expires at, ready at.
pub type QueueEntryValue = (u32, u32, u64, u64);

/// `(queue id, message id) → acquired count`: how many times a [`QUEUE_MESSAGES`] entry was
/// taken by a consumer or a `Get` and given back (`x-acquired-count`). A row exists only for
/// an entry given back at least once, so publishing and a first delivery write nothing here;
/// it is removed with its entry. Absent means 0, or, for an entry written before this table
/// existed, its delivery count (every requeue was then counted there): old stores need no
/// migration and keep [`SCHEMA_VERSION`] 1.
pub const QUEUE_ACQUIRED: TableDefinition<(u64, u64), u32> = TableDefinition::new("queue_acquired");

/// `(due at, message id) → MessageRecord`: published messages held until their not-before
/// time, then routed. Due times are ms since the epoch; the scan order is release order.
pub const SCHEDULED: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("scheduled");

/// `user name → UserRecord`: users, with their argon2id password hashes (PHC strings, never
/// the password) and tags.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// `(user name, virtual host) → PermissionRecord`: what a user may do in a virtual host.
pub const PERMISSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("permissions");
/// `(scope, key) → (message id, expires at)`: the deduplication keys accepted by durable
/// exchanges and queues with `x-message-deduplication` (docs/deduplication.md). The scope is
/// `e/<exchange name>` or `q/<queue id>` ([`super::dedup_scope_of_exchange`],
/// [`super::dedup_scope_of_queue`]); the message id orders keys by acceptance (a count window
/// keeps the newest at recovery); `expires at` is ms since the epoch, 0 for a window by count
/// only. Written in the commit of the publish that accepted the key, so a confirm implies its
/// key is durable. Added after schema version 1 with no migration: a store without the table
/// simply has no keys.
pub const DEDUP_KEYS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("dedup_keys");

/// `(expires at, scope, key) → ()`: the time index of [`DEDUP_KEYS`] rows that expire, so a
/// commit removes expired keys in bulk by one range scan instead of a scan of every key.
pub const DEDUP_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("dedup_expiry");

/// `(queue id, offset) → (message id, publish timestamp, body size)`: the entries of each
/// stream queue (docs/streams.md), in offset order. The body is the [`MESSAGES`] row, shared
/// with classic queues the same publish reached and counted in [`MESSAGE_REFS`] like a
/// [`QUEUE_MESSAGES`] row. The timestamp is ms since the epoch, the time of the commit that
/// appended it. Rows leave only from the oldest end (retention, in whole chunks) or with
/// their stream. Added without a schema change: a store without the table has no streams.
pub const STREAM_ENTRIES: TableDefinition<(u64, u64), StreamEntryValue> =
    TableDefinition::new("stream_entries");

/// The value of a [`STREAM_ENTRIES`] row: message id, publish timestamp, body size.
pub type StreamEntryValue = (u64, u64, u32);

/// `(queue id, consumer name) → next offset`: where each named stream consumer resumes (one
/// past its last settled offset), written in the commit that carries its acks; removed with
/// its stream.
pub const STREAM_POSITIONS: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("stream_positions");

/// `(queue id, producer name) → ProducerRecord`: the last sequence number stored for each
/// named producer of a stream queue (`x-producer-name`, `x-producer-sequence`;
/// docs/deduplication.md). Written in the commit that appends the entry carrying it, so a
/// confirm implies the sequence is durable; removed with its stream, kept by retention (a
/// producer's retry of a trimmed entry is still a duplicate). The value is
/// [`super::codec::encode_producer`]: a version byte, then the sequence. Added without a schema
/// change: a store without the table has no producers.
pub const STREAM_PRODUCERS: TableDefinition<(u64, &str), &[u8]> =
    TableDefinition::new("stream_producers");
