//! Settling frames: `Ack` (0x49), `Nack` (0x4a) and `Reject` (0x4b), each with its layout.
//! They settle deliveries from both `Deliver` and `GetOk` ([`super::consume`]).

use bytes::{BufMut, BytesMut};

use super::{bits, flag, Payload};
use crate::error::DecodeError;
use crate::read::Reader;
use crate::write::put_bool;

// Flags shared by `Ack` and `Nack`: multiple in bit 0.
const F_MULTIPLE: u8 = 1;

/// Acknowledges deliveries: they are done and leave the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The delivery.
    pub delivery_tag: u64,
    /// Also every earlier unacked delivery on this connection.
    pub multiple: bool,
}

impl Payload for Ack {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.delivery_tag);
        dst.put_u8(bits(&[(self.multiple, F_MULTIPLE)]));
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let delivery_tag = r.u64()?;
        let f = r.flags("ack flags", F_MULTIPLE)?;
        Ok(Ack {
            delivery_tag,
            multiple: flag(f, F_MULTIPLE),
        })
    }
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

// `Nack` flags, besides `F_MULTIPLE`.
const F_REQUEUE: u8 = 1 << 1;

impl Payload for Nack {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.delivery_tag);
        dst.put_u8(bits(&[
            (self.multiple, F_MULTIPLE),
            (self.requeue, F_REQUEUE),
        ]));
        dst.put_u64_le(self.delay_ms);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let delivery_tag = r.u64()?;
        let f = r.flags("nack flags", F_MULTIPLE | F_REQUEUE)?;
        Ok(Nack {
            delivery_tag,
            multiple: flag(f, F_MULTIPLE),
            requeue: flag(f, F_REQUEUE),
            delay_ms: r.u64()?,
        })
    }
}

/// Refuses one delivery (AMQP's `basic.reject`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The delivery.
    pub delivery_tag: u64,
    /// Put it back in its queue instead of dead-lettering it.
    pub requeue: bool,
}

impl Payload for Reject {
    /// `requeue` is a `bool` byte, not a flags byte: only 0 and 1 are valid.
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.delivery_tag);
        put_bool(dst, self.requeue);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Reject {
            delivery_tag: r.u64()?,
            requeue: r.bool("requeue")?,
        })
    }
}
