//! Exchange frames: `ExchangeDeclare` (0x10), `ExchangeDelete` (0x11) and
//! `ExchangeBind`/`ExchangeUnbind` (0x12/0x13, one layout), each with its layout, and the
//! [`ExchangeKind`] byte.

use bytes::{BufMut, BytesMut};

use super::{bits, flag, Payload};
use crate::error::DecodeError;
use crate::field_table::{put_table, read_arguments, FieldTable};
use crate::read::Reader;
use crate::write::put_str16;

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
    /// Deleted when its last binding as a source goes (not before it has had one).
    pub auto_delete: bool,
    /// Clients cannot publish to it; it is reached only through exchange-to-exchange
    /// bindings, as an alternate or as a dead-letter exchange.
    pub internal: bool,
    /// Extra arguments, kept with the exchange.
    pub arguments: FieldTable,
}

// `ExchangeDeclare` flags. Bits 2 and 3 came later: a client that never sets them sends
// the same bytes as before.
const F_DURABLE: u8 = 1;
const F_PASSIVE: u8 = 1 << 1;
const F_AUTO_DELETE: u8 = 1 << 2;
const F_INTERNAL: u8 = 1 << 3;

impl Payload for ExchangeDeclare {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.name);
        dst.put_u8(self.kind as u8);
        dst.put_u8(bits(&[
            (self.durable, F_DURABLE),
            (self.passive, F_PASSIVE),
            (self.auto_delete, F_AUTO_DELETE),
            (self.internal, F_INTERNAL),
        ]));
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.str16("exchange")?;
        let offset = r.offset();
        let kind = ExchangeKind::from_u8(r.u8()?, offset)?;
        let f = r.flags(
            "exchange flags",
            F_DURABLE | F_PASSIVE | F_AUTO_DELETE | F_INTERNAL,
        )?;
        Ok(ExchangeDeclare {
            name,
            kind,
            durable: flag(f, F_DURABLE),
            passive: flag(f, F_PASSIVE),
            auto_delete: flag(f, F_AUTO_DELETE),
            internal: flag(f, F_INTERNAL),
            arguments: read_arguments(r)?,
        })
    }
}

/// Deletes an exchange and its bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDelete {
    /// Exchange name.
    pub name: String,
    /// Fail if the exchange still has bindings.
    pub if_unused: bool,
}

// `ExchangeDelete` flags.
const F_IF_UNUSED: u8 = 1;

impl Payload for ExchangeDelete {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.name);
        dst.put_u8(bits(&[(self.if_unused, F_IF_UNUSED)]));
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.str16("exchange")?;
        let f = r.flags("exchange delete flags", F_IF_UNUSED)?;
        Ok(ExchangeDelete {
            name,
            if_unused: flag(f, F_IF_UNUSED),
        })
    }
}

/// Binds a destination exchange to a source exchange (`ExchangeBind`), or removes that
/// binding (`ExchangeUnbind`): messages the source routes by this binding go on to be routed
/// by the destination, as AMQP's `exchange.bind`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeBind {
    /// Destination exchange.
    pub destination: String,
    /// Source exchange.
    pub source: String,
    /// Binding key (a pattern for a topic source).
    pub routing_key: String,
    /// Binding arguments (`x-match` and the values for a headers source).
    pub arguments: FieldTable,
}

impl Payload for ExchangeBind {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.destination);
        put_str16(dst, &self.source);
        put_str16(dst, &self.routing_key);
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ExchangeBind {
            destination: r.str16("destination exchange")?,
            source: r.str16("source exchange")?,
            routing_key: r.str16("routing key")?,
            arguments: read_arguments(r)?,
        })
    }
}
