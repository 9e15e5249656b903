//! Queue frames: `QueueDeclare` (0x20), `QueueDeclareOk` (0x21), `QueueDelete` (0x22) and
//! `QueueBind`/`QueueUnbind` (0x26/0x27, one layout), each with its layout.
//!
//! `QueueDeleteOk` (0x23, `message_count: u64`), `QueuePurge` (0x24, `name: str16`) and
//! `QueuePurgeOk` (0x25, `message_count: u64`) carry their one field inline in their
//! [`Frame`](super::Frame) variant; their one-line codecs are in the dispatch in `mod.rs`.

use bytes::{BufMut, BytesMut};

use super::{bits, flag, Payload};
use crate::error::DecodeError;
use crate::field_table::{put_table, read_arguments, FieldTable};
use crate::read::Reader;
use crate::write::put_str16;

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

// `QueueDeclare` flags.
const F_DURABLE: u8 = 1;
const F_PASSIVE: u8 = 1 << 1;
const F_EXCLUSIVE: u8 = 1 << 2;
const F_AUTO_DELETE: u8 = 1 << 3;

impl Payload for QueueDeclare {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.name);
        dst.put_u8(bits(&[
            (self.durable, F_DURABLE),
            (self.passive, F_PASSIVE),
            (self.exclusive, F_EXCLUSIVE),
            (self.auto_delete, F_AUTO_DELETE),
        ]));
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.str16("queue")?;
        let f = r.flags(
            "queue flags",
            F_DURABLE | F_PASSIVE | F_EXCLUSIVE | F_AUTO_DELETE,
        )?;
        Ok(QueueDeclare {
            name,
            durable: flag(f, F_DURABLE),
            passive: flag(f, F_PASSIVE),
            exclusive: flag(f, F_EXCLUSIVE),
            auto_delete: flag(f, F_AUTO_DELETE),
            arguments: read_arguments(r)?,
        })
    }
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

impl Payload for QueueDeclareOk {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.name);
        dst.put_u64_le(self.message_count);
        dst.put_u32_le(self.consumer_count);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(QueueDeclareOk {
            name: r.str16("queue")?,
            message_count: r.u64()?,
            consumer_count: r.u32()?,
        })
    }
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

// `QueueDelete` flags.
const F_IF_UNUSED: u8 = 1;
const F_IF_EMPTY: u8 = 1 << 1;

impl Payload for QueueDelete {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.name);
        dst.put_u8(bits(&[
            (self.if_unused, F_IF_UNUSED),
            (self.if_empty, F_IF_EMPTY),
        ]));
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.str16("queue")?;
        let f = r.flags("queue delete flags", F_IF_UNUSED | F_IF_EMPTY)?;
        Ok(QueueDelete {
            name,
            if_unused: flag(f, F_IF_UNUSED),
            if_empty: flag(f, F_IF_EMPTY),
        })
    }
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

impl Payload for QueueBind {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.queue);
        put_str16(dst, &self.exchange);
        put_str16(dst, &self.routing_key);
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(QueueBind {
            queue: r.str16("queue")?,
            exchange: r.str16("exchange")?,
            routing_key: r.str16("routing key")?,
            arguments: read_arguments(r)?,
        })
    }
}
