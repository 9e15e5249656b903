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
//!
//! # Where each frame lives
//!
//! Each payload struct sits in one file with its encoder and decoder (a `Payload` impl right
//! below the struct), grouped like PROTOCOL.md §9 and AMQP's classes. This file holds the
//! [`Opcode`] table, the [`Frame`] enum, the dispatch from a frame to its payload's codec
//! ([`Frame::encode_payload`], [`Frame::decode_payload`]) and the [`Envelope`] header.
//!
//! | file | frames |
//! |---|---|
//! | `connection.rs` | [`Hello`], [`Close`], [`ErrorFrame`]; `Heartbeat`, `CloseOk`, `Ok` have no payload |
//! | `open.rs` | [`Open`] (and [`Mechanism`]) |
//! | `exchange.rs` | [`ExchangeDeclare`] (and [`ExchangeKind`]), [`ExchangeDelete`], [`ExchangeBind`] (also `ExchangeUnbind`) |
//! | `queue.rs` | [`QueueDeclare`], [`QueueDeclareOk`], [`QueueDelete`], [`QueueBind`] (also `QueueUnbind`) |
//! | `publish.rs` | [`Publish`] (and [`PublishRef`]), [`Confirm`], [`Return`] |
//! | `consume.rs` | [`Qos`], [`Consume`], [`ConsumerTag`] (`ConsumeOk`), [`Cancel`], [`ConsumerCancelled`], [`Deliver`] (and [`DeliverRef`]), [`Get`], [`GetOk`]; `GetEmpty` has no payload |
//! | `ack.rs` | [`Ack`], [`Nack`], [`Reject`] |
//! | `admin.rs` | [`Admin`] |
//! | `mod.rs` (the dispatch) | the one-field variants `Blocked`, `QueueDeleteOk`, `QueuePurge`, `QueuePurgeOk`, `AdminOk`; `Unblocked` has no payload |

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::read::Reader;
use crate::write::put_str16;

mod ack;
mod admin;
mod connection;
mod consume;
mod exchange;
mod open;
mod publish;
mod queue;

pub use ack::{Ack, Nack, Reject};
pub use admin::Admin;
pub use connection::{Close, ErrorFrame, Hello};
pub use consume::{
    Cancel, Consume, ConsumerCancelled, ConsumerTag, Deliver, DeliverRef, Get, GetOk, Qos,
};
pub use exchange::{ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeKind};
pub use open::{Mechanism, Open};
pub use publish::{Confirm, Publish, PublishRef, Return};
pub use queue::{QueueBind, QueueDeclare, QueueDeclareOk, QueueDelete};

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
    Blocked = 0x0a,
    Unblocked = 0x0b,
    Open = 0x07,
    ExchangeDeclare = 0x10,
    ExchangeDelete = 0x11,
    ExchangeBind = 0x12,
    ExchangeUnbind = 0x13,
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
    /// Server → client: the server stopped reading this connection's frames because a
    /// resource alarm (low disk space, the memory budget) blocks its publishes.
    Blocked {
        /// Which alarm, for people.
        reason: String,
    },
    /// Server → client: the alarm cleared; the server reads the connection again.
    Unblocked,
    /// Authenticate and choose a virtual host; reply `Ok`. The first frame a client sends.
    Open(Open),
    /// Declare an exchange; reply `Ok`.
    ExchangeDeclare(ExchangeDeclare),
    /// Delete an exchange; reply `Ok`.
    ExchangeDelete(ExchangeDelete),
    /// Bind a destination exchange to a source exchange; reply `Ok`.
    ExchangeBind(ExchangeBind),
    /// Remove an exchange-to-exchange binding; reply `Ok`.
    ExchangeUnbind(ExchangeBind),
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

/// A payload struct's wire layout: each one implements this right below its definition, and
/// [`Frame::encode_payload`] / [`Frame::decode_payload`] dispatch to it by opcode.
trait Payload: Sized {
    /// Appends the payload (everything after opcode and request id).
    fn encode(&self, dst: &mut BytesMut);

    /// Reads the payload's fields in order. Whether bytes are left over is the caller's check
    /// ([`Reader::finish`]).
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;
}

/// Starts a frame in `dst`: a zero length prefix, the opcode and the request id. Returns
/// where the frame starts, for [`finish_frame`] once the payload is written.
fn start_frame(dst: &mut BytesMut, opcode: Opcode, request_id: RequestId) -> usize {
    let start = dst.len();
    dst.put_u32_le(0);
    dst.put_u8(opcode as u8);
    dst.put_u64_le(request_id);
    start
}

/// Fills in the length prefix of the frame that [`start_frame`] began at `start`.
fn finish_frame(dst: &mut BytesMut, start: usize) {
    let len = dst.len().saturating_sub(start).saturating_sub(4);
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    if let Some(prefix) = dst.get_mut(start..start + 4) {
        prefix.copy_from_slice(&len);
    }
}

/// Whether `bit` is set in a flags byte.
fn flag(flags: u8, bit: u8) -> bool {
    flags & bit != 0
}

/// A flags byte with the bit of every pair whose bool is true.
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
            Frame::Blocked { .. } => Opcode::Blocked,
            Frame::Unblocked => Opcode::Unblocked,
            Frame::Open(_) => Opcode::Open,
            Frame::ExchangeDeclare(_) => Opcode::ExchangeDeclare,
            Frame::ExchangeDelete(_) => Opcode::ExchangeDelete,
            Frame::ExchangeBind(_) => Opcode::ExchangeBind,
            Frame::ExchangeUnbind(_) => Opcode::ExchangeUnbind,
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
            Frame::Heartbeat | Frame::CloseOk | Frame::Ok | Frame::GetEmpty | Frame::Unblocked => {}
            // Blocked: `reason: str16`.
            Frame::Blocked { reason } => put_str16(dst, reason),
            Frame::Hello(h) => h.encode(dst),
            Frame::Close(c) => c.encode(dst),
            Frame::Error(e) => e.encode(dst),
            Frame::Open(o) => o.encode(dst),
            Frame::ExchangeDeclare(d) => d.encode(dst),
            Frame::ExchangeDelete(d) => d.encode(dst),
            Frame::ExchangeBind(b) | Frame::ExchangeUnbind(b) => b.encode(dst),
            Frame::QueueDeclare(d) => d.encode(dst),
            Frame::QueueDeclareOk(o) => o.encode(dst),
            Frame::QueueDelete(d) => d.encode(dst),
            // QueueDeleteOk, QueuePurgeOk: `message_count: u64`.
            Frame::QueueDeleteOk { message_count } | Frame::QueuePurgeOk { message_count } => {
                dst.put_u64_le(*message_count);
            }
            // QueuePurge: `name: str16`.
            Frame::QueuePurge { name } => put_str16(dst, name),
            Frame::QueueBind(b) | Frame::QueueUnbind(b) => b.encode(dst),
            Frame::Publish(p) => p.encode(dst),
            Frame::Confirm(c) => c.encode(dst),
            Frame::Return(r) => r.encode(dst),
            Frame::Qos(q) => q.encode(dst),
            Frame::Consume(c) => c.encode(dst),
            Frame::ConsumeOk(t) => t.encode(dst),
            Frame::Cancel(c) => c.encode(dst),
            Frame::ConsumerCancelled(c) => c.encode(dst),
            Frame::Deliver(d) => d.encode(dst),
            Frame::Get(g) => g.encode(dst),
            Frame::GetOk(g) => g.encode(dst),
            Frame::Ack(a) => a.encode(dst),
            Frame::Nack(n) => n.encode(dst),
            Frame::Reject(r) => r.encode(dst),
            Frame::Admin(a) => a.encode(dst),
            // AdminOk: the rest of the frame is the JSON body.
            Frame::AdminOk { body } => dst.put_slice(body),
        }
    }

    /// Decodes the payload of a frame with this opcode. The whole payload must be consumed.
    ///
    /// # Errors
    /// The payload does not match the opcode's layout, or carries an argument table over
    /// [`crate::MAX_ARGUMENT_TABLE_BYTES`] ([`DecodeError::ArgumentsTooLarge`]).
    pub fn decode_payload(opcode: Opcode, payload: Bytes) -> Result<Frame, DecodeError> {
        match Frame::decode_payload_noting(opcode, payload)? {
            (frame, None) => Ok(frame),
            (_, Some(size)) => Err(DecodeError::ArgumentsTooLarge {
                size,
                max: crate::MAX_ARGUMENT_TABLE_BYTES,
            }),
        }
    }

    /// As [`Frame::decode_payload`], except that an argument table over
    /// [`crate::MAX_ARGUMENT_TABLE_BYTES`] is stepped over: the frame comes back with empty
    /// arguments and the table's size, for the server to refuse the request by its id.
    fn decode_payload_noting(
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<(Frame, Option<usize>), DecodeError> {
        let mut r = Reader::new(payload);
        let frame = match opcode {
            Opcode::Hello => Frame::Hello(Hello::decode(&mut r)?),
            Opcode::Heartbeat => Frame::Heartbeat,
            Opcode::Close => Frame::Close(Close::decode(&mut r)?),
            Opcode::CloseOk => Frame::CloseOk,
            Opcode::Error => Frame::Error(ErrorFrame::decode(&mut r)?),
            Opcode::Ok => Frame::Ok,
            Opcode::Blocked => Frame::Blocked {
                reason: r.str16("reason")?,
            },
            Opcode::Unblocked => Frame::Unblocked,
            Opcode::Open => Frame::Open(Open::decode(&mut r)?),
            Opcode::ExchangeDeclare => Frame::ExchangeDeclare(ExchangeDeclare::decode(&mut r)?),
            Opcode::ExchangeDelete => Frame::ExchangeDelete(ExchangeDelete::decode(&mut r)?),
            Opcode::ExchangeBind => Frame::ExchangeBind(ExchangeBind::decode(&mut r)?),
            Opcode::ExchangeUnbind => Frame::ExchangeUnbind(ExchangeBind::decode(&mut r)?),
            Opcode::QueueDeclare => Frame::QueueDeclare(QueueDeclare::decode(&mut r)?),
            Opcode::QueueDeclareOk => Frame::QueueDeclareOk(QueueDeclareOk::decode(&mut r)?),
            Opcode::QueueDelete => Frame::QueueDelete(QueueDelete::decode(&mut r)?),
            Opcode::QueueDeleteOk => Frame::QueueDeleteOk {
                message_count: r.u64()?,
            },
            Opcode::QueuePurge => Frame::QueuePurge {
                name: r.str16("queue")?,
            },
            Opcode::QueuePurgeOk => Frame::QueuePurgeOk {
                message_count: r.u64()?,
            },
            Opcode::QueueBind => Frame::QueueBind(QueueBind::decode(&mut r)?),
            Opcode::QueueUnbind => Frame::QueueUnbind(QueueBind::decode(&mut r)?),
            Opcode::Publish => Frame::Publish(Box::new(Publish::decode(&mut r)?)),
            Opcode::Confirm => Frame::Confirm(Confirm::decode(&mut r)?),
            Opcode::Return => Frame::Return(Box::new(Return::decode(&mut r)?)),
            Opcode::Qos => Frame::Qos(Qos::decode(&mut r)?),
            Opcode::Consume => Frame::Consume(Consume::decode(&mut r)?),
            Opcode::ConsumeOk => Frame::ConsumeOk(ConsumerTag::decode(&mut r)?),
            Opcode::Cancel => Frame::Cancel(Cancel::decode(&mut r)?),
            Opcode::ConsumerCancelled => {
                Frame::ConsumerCancelled(ConsumerCancelled::decode(&mut r)?)
            }
            Opcode::Deliver => Frame::Deliver(Box::new(Deliver::decode(&mut r)?)),
            Opcode::Get => Frame::Get(Get::decode(&mut r)?),
            Opcode::GetOk => Frame::GetOk(Box::new(GetOk::decode(&mut r)?)),
            Opcode::GetEmpty => Frame::GetEmpty,
            Opcode::Ack => Frame::Ack(Ack::decode(&mut r)?),
            Opcode::Nack => Frame::Nack(Nack::decode(&mut r)?),
            Opcode::Reject => Frame::Reject(Reject::decode(&mut r)?),
            Opcode::Admin => Frame::Admin(Admin::decode(&mut r)?),
            Opcode::AdminOk => Frame::AdminOk { body: r.rest() },
        };
        let oversized = r.oversized_table();
        r.finish(opcode.name())?;
        Ok((frame, oversized))
    }
}

impl Envelope {
    /// Appends the whole frame, length prefix included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = start_frame(dst, self.frame.opcode(), self.request_id);
        self.frame.encode_payload(dst);
        finish_frame(dst, start);
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

    /// As [`Envelope::decode`], except that what is over a cap comes back stepped over rather
    /// than built, with its size, for the server to refuse the request by its id and keep the
    /// connection: a publish whose encoded properties are longer than `max_property_bytes`
    /// comes back without its headers (see [`Publish::decode_capped`]), a request whose
    /// argument table is over [`crate::MAX_ARGUMENT_TABLE_BYTES`] with empty arguments.
    ///
    /// # Errors
    /// As [`Envelope::decode`], but for those two.
    pub fn decode_capped(
        mut frame: Bytes,
        max_property_bytes: usize,
    ) -> Result<(Envelope, Option<Oversized>), DecodeError> {
        if frame.len() < FRAME_HEADER_BYTES {
            return Envelope::decode(frame).map(|e| (e, None));
        }
        let mut header = Reader::new(frame.split_to(FRAME_HEADER_BYTES));
        let opcode = Opcode::try_from(header.u8()?)?;
        let request_id = header.u64()?;
        if opcode != Opcode::Publish {
            let (frame, oversized) = Frame::decode_payload_noting(opcode, frame)?;
            let envelope = Envelope { request_id, frame };
            return Ok((envelope, oversized.map(Oversized::Arguments)));
        }
        let mut r = Reader::new(frame);
        let (publish, oversized) = Publish::decode_capped(&mut r, max_property_bytes)?;
        let frame = Frame::Publish(Box::new(publish));
        Ok((
            Envelope { request_id, frame },
            oversized.map(Oversized::Properties),
        ))
    }
}

/// What a capped decode ([`Envelope::decode_capped`]) stepped over instead of building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversized {
    /// A publish's encoded properties (headers included), over the header cap: the size.
    Properties(usize),
    /// A request's argument table, over [`crate::MAX_ARGUMENT_TABLE_BYTES`]: its size.
    Arguments(usize),
}
