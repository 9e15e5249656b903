//! Frames: one [`Frame`] variant per protocol operation, its [`Opcode`], and the exact byte
//! layout of each payload.
//!
//! A frame on the wire is
//!
//! ```text
//! +----------------+--------+-----------------+----------------------+
//! | length: u32 LE | opcode | request_id: u64 | payload (per opcode) |
//! +----------------+--------+-----------------+----------------------+
//!                  |<-------------- length bytes ------------------->|
//! ```
//!
//! [`Envelope`] is a frame together with its request id. The codec in [`crate::codec`] handles
//! the length prefix; this module handles everything after it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::field_table::{put_table, read_table, FieldTable};
use crate::properties::Properties;
use crate::read::Reader;
use crate::write::{put_bool, put_str16};

/// Bytes of the fixed frame header after the length prefix: opcode + request id.
pub const FRAME_HEADER_BYTES: usize = 1 + 8;

/// Identifies a request; the reply to it carries the same id. Chosen by the client, so it can
/// pipeline many requests. Id 0 is for frames that are not replies (deliveries, heartbeats,
/// server notices) and, on `Ack`/`Nack`/`Reject`, means "no reply wanted".
pub type RequestId = u64;

macro_rules! opcodes {
    ($($name:ident = $val:literal),* $(,)?) => {
        /// The one-byte operation code at the start of every frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum Opcode { $(#[allow(missing_docs)] $name = $val),* }

        impl Opcode {
            /// Every opcode, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];

            /// The operation's name as PROTOCOL.md spells it (used in logs and metrics).
            pub fn name(self) -> &'static str {
                match self { $(Opcode::$name => stringify!($name)),* }
            }
        }

        impl TryFrom<u8> for Opcode {
            type Error = DecodeError;
            fn try_from(v: u8) -> Result<Self, DecodeError> {
                match v {
                    $($val => Ok(Opcode::$name),)*
                    other => Err(DecodeError::UnknownOpcode(other)),
                }
            }
        }
    };
}

opcodes! {
    Hello = 0x01,
    Heartbeat = 0x02,
    Close = 0x03,
    CloseOk = 0x04,
    Error = 0x05,
    Ok = 0x06,
    ExchangeDeclare = 0x10,
    ExchangeDelete = 0x11,
    QueueDeclare = 0x20,
    QueueDeclareOk = 0x21,
    QueueDelete = 0x22,
    QueueDeleteOk = 0x23,
    QueuePurge = 0x24,
    QueuePurgeOk = 0x25,
    QueueBind = 0x26,
    QueueUnbind = 0x27,
    Publish = 0x30,
    Confirm = 0x31,
    Return = 0x32,
    Qos = 0x40,
    Consume = 0x41,
    ConsumeOk = 0x42,
    Cancel = 0x43,
    ConsumerCancelled = 0x44,
    Deliver = 0x45,
    Get = 0x46,
    GetOk = 0x47,
    GetEmpty = 0x48,
    Ack = 0x49,
    Nack = 0x4a,
    Reject = 0x4b,
    Admin = 0x60,
    AdminOk = 0x61,
}

/// The kind of an exchange, which decides how it routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExchangeKind {
    /// Routes to queues bound with a key equal to the routing key.
    Direct = 0,
    /// Routes to every bound queue.
    Fanout = 1,
    /// Routes by dotted-word patterns with `*` and `#`.
    Topic = 2,
    /// Routes by matching message headers against binding arguments.
    Headers = 3,
}

impl ExchangeKind {
    /// The kind's name as users write it (`direct`, `fanout`, `topic`, `headers`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    fn from_u8(v: u8, offset: usize) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => ExchangeKind::Direct,
            1 => ExchangeKind::Fanout,
            2 => ExchangeKind::Topic,
            3 => ExchangeKind::Headers,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "exchange kind",
                    value: u64::from(v),
                    offset,
                })
            }
        })
    }
}

/// Server → client, right after the handshake: what the server speaks and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Protocol version the server will speak on this connection.
    pub version: u16,
    /// Largest frame (length prefix value) either side may send.
    pub max_frame_size: u32,
    /// Heartbeat interval in milliseconds (0 = heartbeats off).
    pub heartbeat_ms: u32,
    /// Server software and version, for logs.
    pub server: String,
}

/// Either side: closing the connection, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    /// [`ErrorCode`] as a number (200 for a normal close).
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
}

/// Server → client: the request with this frame's request id failed (or, with id 0, the
/// connection failed and is about to close).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFrame {
    /// [`ErrorCode`] as a number.
    pub code: u16,
    /// What was wrong, with the offending value.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            code: code.as_u16(),
            message: message.into(),
        }
    }
}

/// Declares an exchange (idempotent for equal attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDeclare {
    /// Exchange name.
    pub name: String,
    /// Routing kind.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Only check that it exists; create nothing.
    pub passive: bool,
    /// Extra arguments, kept with the exchange.
    pub arguments: FieldTable,
}

/// Deletes an exchange and its bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDelete {
    /// Exchange name.
    pub name: String,
    /// Fail if the exchange still has bindings.
    pub if_unused: bool,
}

/// Declares a queue (idempotent for equal attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDeclare {
    /// Queue name; empty asks the server to choose one.
    pub name: String,
    /// Survives a restart.
    pub durable: bool,
    /// Belongs to this connection; deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Only check that it exists; create nothing.
    pub passive: bool,
    /// Queue arguments (`x-...`), kept with the queue.
    pub arguments: FieldTable,
}

/// Reply to [`QueueDeclare`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDeclareOk {
    /// The queue's name (the chosen one for server-named queues).
    pub name: String,
    /// Messages ready in the queue.
    pub message_count: u64,
    /// Consumers attached to it.
    pub consumer_count: u32,
}

/// Deletes a queue, its bindings and its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDelete {
    /// Queue name.
    pub name: String,
    /// Fail if it has consumers.
    pub if_unused: bool,
    /// Fail if it holds messages.
    pub if_empty: bool,
}

/// Binds a queue to an exchange (`QueueBind`) or removes that binding (`QueueUnbind`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueBind {
    /// Destination queue.
    pub queue: String,
    /// Source exchange.
    pub exchange: String,
    /// Binding key (a pattern for topic exchanges).
    pub routing_key: String,
    /// Binding arguments (`x-match` and the values for headers exchanges).
    pub arguments: FieldTable,
}

/// Publishes a message. The server replies with [`Confirm`] once it is safely stored, after a
/// [`Return`] if it was mandatory and unroutable.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Target exchange (`""` is the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Message properties.
    pub properties: Properties,
    /// Message body: the rest of the frame.
    pub body: Bytes,
}

/// The broker's verdict on one publish, sent with the publish's request id.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// The message is stored (durably, if persistent and routed to durable queues).
    Ack,
    /// The broker refused the message.
    Nack {
        /// [`ErrorCode`] as a number.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// A mandatory message no queue took, sent back with the publish's request id before its
/// [`Confirm`].
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    /// [`ErrorCode`] as a number (312 `NO_ROUTE`).
    pub reply_code: u16,
    /// Why.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

/// Sets the prefetch limit for consumers started afterwards on this connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Qos {
    /// Max unacked deliveries per consumer; 0 means no limit.
    pub prefetch_count: u32,
}

/// Starts a push consumer on a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Consume {
    /// Queue to consume from.
    pub queue: String,
    /// Tag naming the consumer on this connection; empty asks the server to choose.
    pub consumer_tag: String,
    /// Deliveries count as acked when sent.
    pub no_ack: bool,
    /// Fail if the queue has other consumers, and keep others off it.
    pub exclusive: bool,
    /// Consumer arguments.
    pub arguments: FieldTable,
}

/// Names a consumer: the reply to [`Consume`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerTag {
    /// The consumer's tag.
    pub consumer_tag: String,
}

/// Client → server: stop a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancel {
    /// The consumer's tag.
    pub consumer_tag: String,
    /// Leave the consumer's unacknowledged deliveries with the connection, to be settled
    /// later (AMQP's `basic.cancel`), instead of requeueing them.
    pub keep_unacked: bool,
}

/// Server → client: the server ended a consumer (its queue was deleted, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerCancelled {
    /// The consumer's tag.
    pub consumer_tag: String,
    /// [`ErrorCode`] as a number.
    pub code: u16,
    /// Why.
    pub reason: String,
}

/// Server → client: a message for a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deliver {
    /// Which consumer.
    pub consumer_tag: String,
    /// Identifies this delivery on this connection, for ack/nack/reject.
    pub delivery_tag: u64,
    /// Delivered before (requeued after a nack, reject, or a lost consumer).
    pub redelivered: bool,
    /// How many earlier deliveries of this message failed.
    pub delivery_count: u32,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

/// Pulls one message from a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    /// Queue to take from.
    pub queue: String,
    /// The message counts as acked when sent.
    pub no_ack: bool,
}

/// Reply to [`Get`] with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct GetOk {
    /// Identifies this delivery, for ack/nack/reject (0 with `no_ack`).
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// How many earlier deliveries of this message failed.
    pub delivery_count: u32,
    /// Messages still ready in the queue.
    pub message_count: u64,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

/// Acknowledges deliveries: they are done and leave the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The delivery.
    pub delivery_tag: u64,
    /// Also every earlier unacked delivery on this connection.
    pub multiple: bool,
}

/// Refuses deliveries: requeue them or dead-letter/drop them.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    /// The delivery.
    pub delivery_tag: u64,
    /// Also every earlier unacked delivery on this connection.
    pub multiple: bool,
    /// Put them back in their queue (at the head) instead of dead-lettering them.
    pub requeue: bool,
    /// With `requeue`: milliseconds before they become ready again (0 = at once).
    pub delay_ms: u64,
}

/// Refuses one delivery (AMQP's `basic.reject`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The delivery.
    pub delivery_tag: u64,
    /// Put it back in its queue instead of dead-lettering it.
    pub requeue: bool,
}

/// An administrative request: a named command with typed arguments. Listings and operator
/// actions (`queue.list`, `dlq.replay`, ...) travel this way; PROTOCOL.md lists the commands
/// and the JSON each one answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// The command, e.g. `queue.list`.
    pub command: String,
    /// Its arguments.
    pub arguments: FieldTable,
}

/// Every operation of the protocol. See PROTOCOL.md for who sends which and what answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Server's greeting after the handshake.
    Hello(Hello),
    /// Keep-alive, either direction.
    Heartbeat,
    /// Close the connection, either direction.
    Close(Close),
    /// Reply to [`Frame::Close`].
    CloseOk,
    /// A request failed.
    Error(ErrorFrame),
    /// A request that returns nothing succeeded.
    Ok,
    /// Declare an exchange; reply `Ok`.
    ExchangeDeclare(ExchangeDeclare),
    /// Delete an exchange; reply `Ok`.
    ExchangeDelete(ExchangeDelete),
    /// Declare a queue; reply `QueueDeclareOk`.
    QueueDeclare(QueueDeclare),
    /// Reply to `QueueDeclare`.
    QueueDeclareOk(QueueDeclareOk),
    /// Delete a queue; reply `QueueDeleteOk`.
    QueueDelete(QueueDelete),
    /// Reply to `QueueDelete`: how many messages were deleted.
    QueueDeleteOk {
        /// Messages deleted with the queue.
        message_count: u64,
    },
    /// Remove every ready message from a queue; reply `QueuePurgeOk`.
    QueuePurge {
        /// Queue name.
        name: String,
    },
    /// Reply to `QueuePurge`.
    QueuePurgeOk {
        /// Messages removed.
        message_count: u64,
    },
    /// Bind a queue to an exchange; reply `Ok`.
    QueueBind(QueueBind),
    /// Remove a binding; reply `Ok`.
    QueueUnbind(QueueBind),
    /// Publish a message; reply `Confirm` (after `Return` if unroutable and mandatory).
    /// Boxed, like the other message-carrying frames, so a `Frame` stays small to move.
    Publish(Box<Publish>),
    /// Publisher confirm.
    Confirm(Confirm),
    /// A mandatory message returned unroutable.
    Return(Box<Return>),
    /// Set the prefetch limit; reply `Ok`.
    Qos(Qos),
    /// Start a consumer; reply `ConsumeOk`.
    Consume(Consume),
    /// Reply to `Consume`.
    ConsumeOk(ConsumerTag),
    /// Stop a consumer; reply `Ok`.
    Cancel(Cancel),
    /// The server stopped a consumer.
    ConsumerCancelled(ConsumerCancelled),
    /// A message for a consumer.
    Deliver(Box<Deliver>),
    /// Pull one message; reply `GetOk` or `GetEmpty`.
    Get(Get),
    /// Reply to `Get` with a message.
    GetOk(Box<GetOk>),
    /// Reply to `Get`: the queue had no ready message.
    GetEmpty,
    /// Acknowledge; reply `Ok` (once durable) unless the request id is 0.
    Ack(Ack),
    /// Negative acknowledge; reply `Ok` unless the request id is 0.
    Nack(Nack),
    /// Reject one delivery; reply `Ok` unless the request id is 0.
    Reject(Reject),
    /// An administrative command; reply `AdminOk`.
    Admin(Admin),
    /// Reply to `Admin`: the result as UTF-8 JSON.
    AdminOk {
        /// The JSON document.
        body: Bytes,
    },
}

/// A `Deliver` frame over borrowed parts. The server encodes deliveries from the message it
/// shares between queues, without first copying its properties into a [`Deliver`]; the
/// bytes are exactly those of the equivalent `Frame::Deliver` (request id 0).
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    /// Which consumer.
    pub consumer_tag: &'a str,
    /// Identifies the delivery on its connection.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Earlier failed deliveries.
    pub delivery_count: u32,
    /// Exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Its properties.
    pub properties: &'a Properties,
    /// Its body.
    pub body: &'a [u8],
}

impl DeliverRef<'_> {
    fn put_payload(&self, dst: &mut BytesMut) {
        put_str16(dst, self.consumer_tag);
        dst.put_u64_le(self.delivery_tag);
        dst.put_u8(bits(&[(self.redelivered, F_REDELIVERED)]));
        dst.put_u32_le(self.delivery_count);
        put_str16(dst, self.exchange);
        put_str16(dst, self.routing_key);
        self.properties.encode(dst);
        dst.put_slice(self.body);
    }

    /// Appends the whole frame, length prefix included, with request id 0.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32_le(0);
        dst.put_u8(Opcode::Deliver as u8);
        dst.put_u64_le(0);
        self.put_payload(dst);
        let len = dst.len().saturating_sub(start).saturating_sub(4);
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
        if let Some(prefix) = dst.get_mut(start..start + 4) {
            prefix.copy_from_slice(&len);
        }
    }
}

/// A frame with its request id: the unit the codec reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The request this frame is, or answers (0 if neither).
    pub request_id: RequestId,
    /// The frame.
    pub frame: Frame,
}

impl Envelope {
    /// Wraps a frame.
    pub fn new(request_id: RequestId, frame: Frame) -> Self {
        Envelope { request_id, frame }
    }
}

const F_DURABLE: u8 = 1;
const F_PASSIVE: u8 = 1 << 1;
const F_EXCLUSIVE: u8 = 1 << 2;
const F_AUTO_DELETE: u8 = 1 << 3;
const F_IF_UNUSED: u8 = 1;
const F_IF_EMPTY: u8 = 1 << 1;
const F_MANDATORY: u8 = 1;
const F_NO_ACK: u8 = 1;
const F_CONSUME_EXCLUSIVE: u8 = 1 << 1;
const F_REDELIVERED: u8 = 1;
const F_KEEP_UNACKED: u8 = 1;
const F_MULTIPLE: u8 = 1;
const F_REQUEUE: u8 = 1 << 1;

fn flag(flags: u8, bit: u8) -> bool {
    flags & bit != 0
}

fn bits(pairs: &[(bool, u8)]) -> u8 {
    pairs
        .iter()
        .fold(0, |acc, (on, bit)| if *on { acc | bit } else { acc })
}

impl Frame {
    /// The frame's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Frame::Hello(_) => Opcode::Hello,
            Frame::Heartbeat => Opcode::Heartbeat,
            Frame::Close(_) => Opcode::Close,
            Frame::CloseOk => Opcode::CloseOk,
            Frame::Error(_) => Opcode::Error,
            Frame::Ok => Opcode::Ok,
            Frame::ExchangeDeclare(_) => Opcode::ExchangeDeclare,
            Frame::ExchangeDelete(_) => Opcode::ExchangeDelete,
            Frame::QueueDeclare(_) => Opcode::QueueDeclare,
            Frame::QueueDeclareOk(_) => Opcode::QueueDeclareOk,
            Frame::QueueDelete(_) => Opcode::QueueDelete,
            Frame::QueueDeleteOk { .. } => Opcode::QueueDeleteOk,
            Frame::QueuePurge { .. } => Opcode::QueuePurge,
            Frame::QueuePurgeOk { .. } => Opcode::QueuePurgeOk,
            Frame::QueueBind(_) => Opcode::QueueBind,
            Frame::QueueUnbind(_) => Opcode::QueueUnbind,
            Frame::Publish(_) => Opcode::Publish,
            Frame::Confirm(_) => Opcode::Confirm,
            Frame::Return(_) => Opcode::Return,
            Frame::Qos(_) => Opcode::Qos,
            Frame::Consume(_) => Opcode::Consume,
            Frame::ConsumeOk(_) => Opcode::ConsumeOk,
            Frame::Cancel(_) => Opcode::Cancel,
            Frame::ConsumerCancelled(_) => Opcode::ConsumerCancelled,
            Frame::Deliver(_) => Opcode::Deliver,
            Frame::Get(_) => Opcode::Get,
            Frame::GetOk(_) => Opcode::GetOk,
            Frame::GetEmpty => Opcode::GetEmpty,
            Frame::Ack(_) => Opcode::Ack,
            Frame::Nack(_) => Opcode::Nack,
            Frame::Reject(_) => Opcode::Reject,
            Frame::Admin(_) => Opcode::Admin,
            Frame::AdminOk { .. } => Opcode::AdminOk,
        }
    }

    /// Writes the payload (everything after opcode and request id).
    pub fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            Frame::Hello(h) => {
                dst.put_u16_le(h.version);
                dst.put_u32_le(h.max_frame_size);
                dst.put_u32_le(h.heartbeat_ms);
                put_str16(dst, &h.server);
            }
            Frame::Heartbeat | Frame::CloseOk | Frame::Ok | Frame::GetEmpty => {}
            Frame::Close(c) => {
                dst.put_u16_le(c.code);
                put_str16(dst, &c.reason);
            }
            Frame::Error(e) => {
                dst.put_u16_le(e.code);
                put_str16(dst, &e.message);
            }
            Frame::ExchangeDeclare(d) => {
                put_str16(dst, &d.name);
                dst.put_u8(d.kind as u8);
                dst.put_u8(bits(&[(d.durable, F_DURABLE), (d.passive, F_PASSIVE)]));
                put_table(dst, &d.arguments);
            }
            Frame::ExchangeDelete(d) => {
                put_str16(dst, &d.name);
                dst.put_u8(bits(&[(d.if_unused, F_IF_UNUSED)]));
            }
            Frame::QueueDeclare(d) => {
                put_str16(dst, &d.name);
                dst.put_u8(bits(&[
                    (d.durable, F_DURABLE),
                    (d.passive, F_PASSIVE),
                    (d.exclusive, F_EXCLUSIVE),
                    (d.auto_delete, F_AUTO_DELETE),
                ]));
                put_table(dst, &d.arguments);
            }
            Frame::QueueDeclareOk(o) => {
                put_str16(dst, &o.name);
                dst.put_u64_le(o.message_count);
                dst.put_u32_le(o.consumer_count);
            }
            Frame::QueueDelete(d) => {
                put_str16(dst, &d.name);
                dst.put_u8(bits(&[
                    (d.if_unused, F_IF_UNUSED),
                    (d.if_empty, F_IF_EMPTY),
                ]));
            }
            Frame::QueueDeleteOk { message_count } | Frame::QueuePurgeOk { message_count } => {
                dst.put_u64_le(*message_count);
            }
            Frame::QueuePurge { name } => put_str16(dst, name),
            Frame::QueueBind(b) | Frame::QueueUnbind(b) => {
                put_str16(dst, &b.queue);
                put_str16(dst, &b.exchange);
                put_str16(dst, &b.routing_key);
                put_table(dst, &b.arguments);
            }
            Frame::Publish(p) => {
                put_str16(dst, &p.exchange);
                put_str16(dst, &p.routing_key);
                dst.put_u8(bits(&[(p.mandatory, F_MANDATORY)]));
                p.properties.encode(dst);
                dst.put_slice(&p.body);
            }
            Frame::Confirm(Confirm::Ack) => dst.put_u8(0),
            Frame::Confirm(Confirm::Nack { code, reason }) => {
                dst.put_u8(1);
                dst.put_u16_le(*code);
                put_str16(dst, reason);
            }
            Frame::Return(r) => {
                dst.put_u16_le(r.reply_code);
                put_str16(dst, &r.reply_text);
                put_str16(dst, &r.exchange);
                put_str16(dst, &r.routing_key);
                r.properties.encode(dst);
                dst.put_slice(&r.body);
            }
            Frame::Qos(q) => dst.put_u32_le(q.prefetch_count),
            Frame::Consume(c) => {
                put_str16(dst, &c.queue);
                put_str16(dst, &c.consumer_tag);
                dst.put_u8(bits(&[
                    (c.no_ack, F_NO_ACK),
                    (c.exclusive, F_CONSUME_EXCLUSIVE),
                ]));
                put_table(dst, &c.arguments);
            }
            Frame::ConsumeOk(t) => put_str16(dst, &t.consumer_tag),
            Frame::Cancel(c) => {
                put_str16(dst, &c.consumer_tag);
                dst.put_u8(bits(&[(c.keep_unacked, F_KEEP_UNACKED)]));
            }
            Frame::ConsumerCancelled(c) => {
                put_str16(dst, &c.consumer_tag);
                dst.put_u16_le(c.code);
                put_str16(dst, &c.reason);
            }
            Frame::Deliver(d) => DeliverRef {
                consumer_tag: &d.consumer_tag,
                delivery_tag: d.delivery_tag,
                redelivered: d.redelivered,
                delivery_count: d.delivery_count,
                exchange: &d.exchange,
                routing_key: &d.routing_key,
                properties: &d.properties,
                body: &d.body,
            }
            .put_payload(dst),
            Frame::Get(g) => {
                put_str16(dst, &g.queue);
                dst.put_u8(bits(&[(g.no_ack, F_NO_ACK)]));
            }
            Frame::GetOk(g) => {
                dst.put_u64_le(g.delivery_tag);
                dst.put_u8(bits(&[(g.redelivered, F_REDELIVERED)]));
                dst.put_u32_le(g.delivery_count);
                dst.put_u64_le(g.message_count);
                put_str16(dst, &g.exchange);
                put_str16(dst, &g.routing_key);
                g.properties.encode(dst);
                dst.put_slice(&g.body);
            }
            Frame::Ack(a) => {
                dst.put_u64_le(a.delivery_tag);
                dst.put_u8(bits(&[(a.multiple, F_MULTIPLE)]));
            }
            Frame::Nack(n) => {
                dst.put_u64_le(n.delivery_tag);
                dst.put_u8(bits(&[(n.multiple, F_MULTIPLE), (n.requeue, F_REQUEUE)]));
                dst.put_u64_le(n.delay_ms);
            }
            Frame::Reject(r) => {
                dst.put_u64_le(r.delivery_tag);
                put_bool(dst, r.requeue);
            }
            Frame::Admin(a) => {
                put_str16(dst, &a.command);
                put_table(dst, &a.arguments);
            }
            Frame::AdminOk { body } => dst.put_slice(body),
        }
    }

    /// Decodes the payload of a frame with this opcode. The whole payload must be consumed.
    pub fn decode_payload(opcode: Opcode, payload: Bytes) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(payload);
        let frame = match opcode {
            Opcode::Hello => Frame::Hello(Hello {
                version: r.u16()?,
                max_frame_size: r.u32()?,
                heartbeat_ms: r.u32()?,
                server: r.str16("server")?,
            }),
            Opcode::Heartbeat => Frame::Heartbeat,
            Opcode::Close => Frame::Close(Close {
                code: r.u16()?,
                reason: r.str16("reason")?,
            }),
            Opcode::CloseOk => Frame::CloseOk,
            Opcode::Error => Frame::Error(ErrorFrame {
                code: r.u16()?,
                message: r.str16("message")?,
            }),
            Opcode::Ok => Frame::Ok,
            Opcode::ExchangeDeclare => {
                let name = r.str16("exchange")?;
                let offset = r.offset();
                let kind = ExchangeKind::from_u8(r.u8()?, offset)?;
                let f = r.flags("exchange flags", F_DURABLE | F_PASSIVE)?;
                Frame::ExchangeDeclare(ExchangeDeclare {
                    name,
                    kind,
                    durable: flag(f, F_DURABLE),
                    passive: flag(f, F_PASSIVE),
                    arguments: read_table(&mut r)?,
                })
            }
            Opcode::ExchangeDelete => {
                let name = r.str16("exchange")?;
                let f = r.flags("exchange delete flags", F_IF_UNUSED)?;
                Frame::ExchangeDelete(ExchangeDelete {
                    name,
                    if_unused: flag(f, F_IF_UNUSED),
                })
            }
            Opcode::QueueDeclare => {
                let name = r.str16("queue")?;
                let f = r.flags(
                    "queue flags",
                    F_DURABLE | F_PASSIVE | F_EXCLUSIVE | F_AUTO_DELETE,
                )?;
                Frame::QueueDeclare(QueueDeclare {
                    name,
                    durable: flag(f, F_DURABLE),
                    passive: flag(f, F_PASSIVE),
                    exclusive: flag(f, F_EXCLUSIVE),
                    auto_delete: flag(f, F_AUTO_DELETE),
                    arguments: read_table(&mut r)?,
                })
            }
            Opcode::QueueDeclareOk => Frame::QueueDeclareOk(QueueDeclareOk {
                name: r.str16("queue")?,
                message_count: r.u64()?,
                consumer_count: r.u32()?,
            }),
            Opcode::QueueDelete => {
                let name = r.str16("queue")?;
                let f = r.flags("queue delete flags", F_IF_UNUSED | F_IF_EMPTY)?;
                Frame::QueueDelete(QueueDelete {
                    name,
                    if_unused: flag(f, F_IF_UNUSED),
                    if_empty: flag(f, F_IF_EMPTY),
                })
            }
            Opcode::QueueDeleteOk => Frame::QueueDeleteOk {
                message_count: r.u64()?,
            },
            Opcode::QueuePurge => Frame::QueuePurge {
                name: r.str16("queue")?,
            },
            Opcode::QueuePurgeOk => Frame::QueuePurgeOk {
                message_count: r.u64()?,
            },
            Opcode::QueueBind | Opcode::QueueUnbind => {
                let b = QueueBind {
                    queue: r.str16("queue")?,
                    exchange: r.str16("exchange")?,
                    routing_key: r.str16("routing key")?,
                    arguments: read_table(&mut r)?,
                };
                if opcode == Opcode::QueueBind {
                    Frame::QueueBind(b)
                } else {
                    Frame::QueueUnbind(b)
                }
            }
            Opcode::Publish => {
                let exchange = r.str16("exchange")?;
                let routing_key = r.str16("routing key")?;
                let f = r.flags("publish flags", F_MANDATORY)?;
                let properties = Properties::decode(&mut r)?;
                Frame::Publish(Box::new(Publish {
                    exchange,
                    routing_key,
                    mandatory: flag(f, F_MANDATORY),
                    properties,
                    body: r.rest(),
                }))
            }
            Opcode::Confirm => {
                let offset = r.offset();
                match r.u8()? {
                    0 => Frame::Confirm(Confirm::Ack),
                    1 => Frame::Confirm(Confirm::Nack {
                        code: r.u16()?,
                        reason: r.str16("reason")?,
                    }),
                    v => {
                        return Err(DecodeError::InvalidValue {
                            field: "confirm status",
                            value: u64::from(v),
                            offset,
                        })
                    }
                }
            }
            Opcode::Return => Frame::Return(Box::new(Return {
                reply_code: r.u16()?,
                reply_text: r.str16("reply text")?,
                exchange: r.str16("exchange")?,
                routing_key: r.str16("routing key")?,
                properties: Properties::decode(&mut r)?,
                body: r.rest(),
            })),
            Opcode::Qos => Frame::Qos(Qos {
                prefetch_count: r.u32()?,
            }),
            Opcode::Consume => {
                let queue = r.str16("queue")?;
                let consumer_tag = r.str16("consumer tag")?;
                let f = r.flags("consume flags", F_NO_ACK | F_CONSUME_EXCLUSIVE)?;
                Frame::Consume(Consume {
                    queue,
                    consumer_tag,
                    no_ack: flag(f, F_NO_ACK),
                    exclusive: flag(f, F_CONSUME_EXCLUSIVE),
                    arguments: read_table(&mut r)?,
                })
            }
            Opcode::ConsumeOk => Frame::ConsumeOk(ConsumerTag {
                consumer_tag: r.str16("consumer tag")?,
            }),
            Opcode::Cancel => {
                let consumer_tag = r.str16("consumer tag")?;
                let f = r.flags("cancel flags", F_KEEP_UNACKED)?;
                Frame::Cancel(Cancel {
                    consumer_tag,
                    keep_unacked: flag(f, F_KEEP_UNACKED),
                })
            }
            Opcode::ConsumerCancelled => Frame::ConsumerCancelled(ConsumerCancelled {
                consumer_tag: r.str16("consumer tag")?,
                code: r.u16()?,
                reason: r.str16("reason")?,
            }),
            Opcode::Deliver => {
                let consumer_tag = r.str16("consumer tag")?;
                let delivery_tag = r.u64()?;
                let f = r.flags("deliver flags", F_REDELIVERED)?;
                Frame::Deliver(Box::new(Deliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered: flag(f, F_REDELIVERED),
                    delivery_count: r.u32()?,
                    exchange: r.str16("exchange")?,
                    routing_key: r.str16("routing key")?,
                    properties: Properties::decode(&mut r)?,
                    body: r.rest(),
                }))
            }
            Opcode::Get => {
                let queue = r.str16("queue")?;
                let f = r.flags("get flags", F_NO_ACK)?;
                Frame::Get(Get {
                    queue,
                    no_ack: flag(f, F_NO_ACK),
                })
            }
            Opcode::GetOk => {
                let delivery_tag = r.u64()?;
                let f = r.flags("get-ok flags", F_REDELIVERED)?;
                Frame::GetOk(Box::new(GetOk {
                    delivery_tag,
                    redelivered: flag(f, F_REDELIVERED),
                    delivery_count: r.u32()?,
                    message_count: r.u64()?,
                    exchange: r.str16("exchange")?,
                    routing_key: r.str16("routing key")?,
                    properties: Properties::decode(&mut r)?,
                    body: r.rest(),
                }))
            }
            Opcode::GetEmpty => Frame::GetEmpty,
            Opcode::Ack => {
                let delivery_tag = r.u64()?;
                let f = r.flags("ack flags", F_MULTIPLE)?;
                Frame::Ack(Ack {
                    delivery_tag,
                    multiple: flag(f, F_MULTIPLE),
                })
            }
            Opcode::Nack => {
                let delivery_tag = r.u64()?;
                let f = r.flags("nack flags", F_MULTIPLE | F_REQUEUE)?;
                Frame::Nack(Nack {
                    delivery_tag,
                    multiple: flag(f, F_MULTIPLE),
                    requeue: flag(f, F_REQUEUE),
                    delay_ms: r.u64()?,
                })
            }
            Opcode::Reject => Frame::Reject(Reject {
                delivery_tag: r.u64()?,
                requeue: r.bool("requeue")?,
            }),
            Opcode::Admin => Frame::Admin(Admin {
                command: r.str16("admin command")?,
                arguments: read_table(&mut r)?,
            }),
            Opcode::AdminOk => Frame::AdminOk { body: r.rest() },
        };
        r.finish(opcode.name())?;
        Ok(frame)
    }
}

impl Envelope {
    /// Appends the whole frame, length prefix included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32_le(0);
        dst.put_u8(self.frame.opcode() as u8);
        dst.put_u64_le(self.request_id);
        self.frame.encode_payload(dst);
        let len = dst.len().saturating_sub(start).saturating_sub(4);
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
        if let Some(prefix) = dst.get_mut(start..start + 4) {
            prefix.copy_from_slice(&len);
        }
    }

    /// The frame's full encoding, as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes one frame from its bytes after the length prefix (opcode, request id, payload).
    pub fn decode(mut frame: Bytes) -> Result<Envelope, DecodeError> {
        if frame.len() < FRAME_HEADER_BYTES {
            return Err(DecodeError::FrameTooShort {
                size: frame.len() as u64,
                min: FRAME_HEADER_BYTES as u64,
            });
        }
        let mut header = Reader::new(frame.split_to(FRAME_HEADER_BYTES));
        let opcode = Opcode::try_from(header.u8()?)?;
        let request_id = header.u64()?;
        let frame = Frame::decode_payload(opcode, frame)?;
        Ok(Envelope { request_id, frame })
    }
}
