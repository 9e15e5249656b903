//! Encoding of store records. Each record starts with a version byte; decoding is fallible.
//! The field encodings are the wire protocol's, so there is one definition of how a string,
//! a header table or message properties are laid out.

use bytes::{BufMut, Bytes, BytesMut};
use warren_protocol::field_table::{put_table, read_table};
use warren_protocol::read::Reader;
use warren_protocol::write::put_str16;
use warren_protocol::{DecodeError, ExchangeKind, FieldTable, Properties};

use crate::message::Message;

const RECORD_V1: u8 = 1;

/// The virtual host every record stored before virtual hosts belongs to.
pub const DEFAULT_VHOST: &str = "/";

/// The store key of an exchange or queue named `name` in `vhost`: the bare name in `/` (so
/// every key stored before virtual hosts stays valid), else `vhost NUL name`. Names and
/// virtual host names never hold control characters, so the two forms cannot collide.
pub fn entity_key(vhost: &str, name: &str) -> String {
    if vhost == DEFAULT_VHOST {
        name.to_owned()
    } else {
        format!("{vhost}\u{0}{name}")
    }
}

/// A virtual host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostRecord {
    /// Name.
    pub name: String,
}

impl VhostRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(RECORD_V1);
        put_str16(&mut b, &self.name);
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        header(&mut r, "vhost record version")?;
        let name = r.str16("vhost")?;
        r.finish("vhost record")?;
        Ok(VhostRecord { name })
    }
}

/// The version byte of an exchange or queue record outside `/`: the version 1 layout with
/// the virtual host right after this byte. Records in `/` stay version 1, byte for byte.
const RECORD_IN_VHOST: u8 = 2;

/// Reads the version byte of an exchange or queue record, and the virtual host it names
/// (`/` for version 1).
fn vhost_header(r: &mut Reader, what: &'static str) -> Result<String, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        RECORD_V1 => Ok(DEFAULT_VHOST.to_owned()),
        RECORD_IN_VHOST => r.str16("vhost"),
        v => Err(DecodeError::InvalidValue {
            field: what,
            value: u64::from(v),
            offset,
        }),
    }
}

/// Writes the version byte (and the virtual host, outside `/`) of an exchange or queue
/// record.
fn put_vhost_header(b: &mut BytesMut, vhost: &str) {
    if vhost == DEFAULT_VHOST {
        b.put_u8(RECORD_V1);
    } else {
        b.put_u8(RECORD_IN_VHOST);
        put_str16(b, vhost);
    }
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeRecord {
    /// Its virtual host.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Routing kind.
    pub kind: ExchangeKind,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// Deleted when its last binding as a source goes.
    pub auto_delete: bool,
    /// Clients cannot publish to it.
    pub internal: bool,
}

// Exchange record flags: a byte after the arguments, written only when one is set, so a
// record without them is byte for byte what Warren stored before they existed (and such a
// record decodes with both false).
const EXCHANGE_AUTO_DELETE: u8 = 1;
const EXCHANGE_INTERNAL: u8 = 1 << 1;

/// A durable queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRecord {
    /// Its virtual host.
    pub vhost: String,
    /// Numeric id, the first half of its `QUEUE_MESSAGES` keys.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Declared exclusive (such queues are deleted at recovery: their connection is gone).
    pub exclusive: bool,
    /// Declared auto-delete.
    pub auto_delete: bool,
    /// Queue arguments.
    pub arguments: FieldTable,
}

/// A durable binding.
/// What a binding's destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DestinationKind {
    /// A queue (every binding stored before exchange-to-exchange bindings).
    #[default]
    Queue,
    /// An exchange.
    Exchange,
}

/// A durable binding.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    /// The virtual host of its exchange and destination.
    pub vhost: String,
    /// Source exchange.
    pub exchange: String,
    /// Destination: a queue, or an exchange by `destination_kind`.
    pub destination: String,
    /// Whether `destination` names a queue or an exchange.
    pub destination_kind: DestinationKind,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// The version byte of a binding record to an exchange; bindings to queues keep
/// [`RECORD_V1`], so every record stored before stays byte-identical (the record is its own
/// key) and decodes as a queue binding.
const BINDING_TO_EXCHANGE: u8 = 2;

/// The version bytes of binding records outside `/`: as [`RECORD_V1`] and
/// [`BINDING_TO_EXCHANGE`], with the virtual host right after the byte.
const BINDING_TO_QUEUE_IN_VHOST: u8 = 3;
const BINDING_TO_EXCHANGE_IN_VHOST: u8 = 4;

fn header(r: &mut Reader, what: &'static str) -> Result<(), DecodeError> {
    let offset = r.offset();
    let v = r.u8()?;
    if v != RECORD_V1 {
        return Err(DecodeError::InvalidValue {
            field: what,
            value: u64::from(v),
            offset,
        });
    }
    Ok(())
}

impl ExchangeRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_vhost_header(&mut b, &self.vhost);
        put_str16(&mut b, &self.name);
        b.put_u8(self.kind as u8);
        put_table(&mut b, &self.arguments);
        let flags = (u8::from(self.auto_delete) * EXCHANGE_AUTO_DELETE)
            | (u8::from(self.internal) * EXCHANGE_INTERNAL);
        if flags != 0 {
            b.put_u8(flags);
        }
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        let vhost = vhost_header(&mut r, "exchange record version")?;
        let name = r.str16("exchange")?;
        let offset = r.offset();
        let kind_byte = r.u8()?;
        let kind = [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ]
        .into_iter()
        .find(|k| *k as u8 == kind_byte)
        .ok_or(DecodeError::InvalidValue {
            field: "exchange kind",
            value: u64::from(kind_byte),
            offset,
        })?;
        let arguments = read_table(&mut r)?;
        let flags = if r.remaining() > 0 {
            r.flags(
                "exchange record flags",
                EXCHANGE_AUTO_DELETE | EXCHANGE_INTERNAL,
            )?
        } else {
            0
        };
        r.finish("exchange record")?;
        Ok(ExchangeRecord {
            vhost,
            name,
            kind,
            arguments,
            auto_delete: flags & EXCHANGE_AUTO_DELETE != 0,
            internal: flags & EXCHANGE_INTERNAL != 0,
        })
    }
}

impl QueueRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_vhost_header(&mut b, &self.vhost);
        b.put_u64_le(self.id);
        put_str16(&mut b, &self.name);
        b.put_u8(u8::from(self.exclusive) | (u8::from(self.auto_delete) << 1));
        put_table(&mut b, &self.arguments);
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        let vhost = vhost_header(&mut r, "queue record version")?;
        let id = r.u64()?;
        let name = r.str16("queue")?;
        let flags = r.flags("queue record flags", 0b11)?;
        let arguments = read_table(&mut r)?;
        r.finish("queue record")?;
        Ok(QueueRecord {
            vhost,
            id,
            name,
            exclusive: flags & 1 != 0,
            auto_delete: flags & 2 != 0,
            arguments,
        })
    }
}

impl BindingRecord {
    /// Encodes the record (deterministic: arguments are a sorted map).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        let default = self.vhost == DEFAULT_VHOST;
        b.put_u8(match (self.destination_kind, default) {
            (DestinationKind::Queue, true) => RECORD_V1,
            (DestinationKind::Exchange, true) => BINDING_TO_EXCHANGE,
            (DestinationKind::Queue, false) => BINDING_TO_QUEUE_IN_VHOST,
            (DestinationKind::Exchange, false) => BINDING_TO_EXCHANGE_IN_VHOST,
        });
        if !default {
            put_str16(&mut b, &self.vhost);
        }
        put_str16(&mut b, &self.exchange);
        put_str16(&mut b, &self.destination);
        put_str16(&mut b, &self.routing_key);
        put_table(&mut b, &self.arguments);
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        let offset = r.offset();
        let (destination_kind, in_vhost) = match r.u8()? {
            RECORD_V1 => (DestinationKind::Queue, false),
            BINDING_TO_EXCHANGE => (DestinationKind::Exchange, false),
            BINDING_TO_QUEUE_IN_VHOST => (DestinationKind::Queue, true),
            BINDING_TO_EXCHANGE_IN_VHOST => (DestinationKind::Exchange, true),
            v => {
                return Err(DecodeError::InvalidValue {
                    field: "binding record version",
                    value: u64::from(v),
                    offset,
                })
            }
        };
        let vhost = if in_vhost {
            r.str16("vhost")?
        } else {
            DEFAULT_VHOST.to_owned()
        };
        let rec = BindingRecord {
            vhost,
            exchange: r.str16("exchange")?,
            destination: r.str16("destination")?,
            destination_kind,
            routing_key: r.str16("routing key")?,
            arguments: read_table(&mut r)?,
        };
        r.finish("binding record")?;
        Ok(rec)
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// The argon2id hash of the password as a PHC string; `None`: the user cannot log in
    /// with a password (imported from a system whose hashes Warren cannot verify).
    pub password_hash: Option<String>,
    /// Tags (`administrator`, `monitoring`, or anything else), sorted, without duplicates.
    pub tags: Vec<String>,
}

/// What a user may do in one virtual host: three regular expressions over resource names,
/// as RabbitMQ's configure / write / read permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRecord {
    /// The user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// Declaring and deleting queues and exchanges.
    pub configure: String,
    /// Publishing to exchanges, binding to queues.
    pub write: String,
    /// Consuming from queues, binding from exchanges.
    pub read: String,
}

impl UserRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(RECORD_V1);
        put_str16(&mut b, &self.name);
        match &self.password_hash {
            Some(h) => {
                b.put_u8(1);
                put_str16(&mut b, h);
            }
            None => b.put_u8(0),
        }
        b.put_u16_le(u16::try_from(self.tags.len()).unwrap_or(u16::MAX));
        for t in self.tags.iter().take(usize::from(u16::MAX)) {
            put_str16(&mut b, t);
        }
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        header(&mut r, "user record version")?;
        let name = r.str16("user")?;
        let password_hash = match r.flags("user record flags", 1)? {
            0 => None,
            _ => Some(r.str16("password hash")?),
        };
        let n = r.u16()?;
        let mut tags = Vec::with_capacity(usize::from(n).min(r.remaining() / 2));
        for _ in 0..n {
            tags.push(r.str16("tag")?);
        }
        r.finish("user record")?;
        Ok(UserRecord {
            name,
            password_hash,
            tags,
        })
    }
}

impl PermissionRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(RECORD_V1);
        for s in [
            &self.user,
            &self.vhost,
            &self.configure,
            &self.write,
            &self.read,
        ] {
            put_str16(&mut b, s);
        }
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(raw));
        header(&mut r, "permission record version")?;
        let rec = PermissionRecord {
            user: r.str16("user")?,
            vhost: r.str16("vhost")?,
            configure: r.str16("configure")?,
            write: r.str16("write")?,
            read: r.str16("read")?,
        };
        r.finish("permission record")?;
        Ok(rec)
    }
}

/// Encodes a message for the `MESSAGES` table.
pub fn encode_message(m: &Message, dst: &mut BytesMut) {
    dst.put_u8(RECORD_V1);
    put_str16(dst, &m.exchange);
    put_str16(dst, &m.routing_key);
    m.properties.encode(dst);
    dst.put_slice(&m.body);
}

/// Decodes a message from the `MESSAGES` table.
pub fn decode_message(raw: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(Bytes::copy_from_slice(raw));
    header(&mut r, "message record version")?;
    Ok(Message {
        write: Default::default(),
        exchange: r.str16("exchange")?,
        routing_key: r.str16("routing key")?,
        properties: Properties::decode(&mut r)?,
        body: r.rest(),
    })
}

/// Encodes a stream producer's last stored sequence for the `STREAM_PRODUCERS` table.
pub fn encode_producer(sequence: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = RECORD_V1;
    out[1..].copy_from_slice(&sequence.to_le_bytes());
    out
}

/// Decodes a stream producer's last stored sequence from the `STREAM_PRODUCERS` table.
///
/// # Errors
/// An unknown version or a record of the wrong length.
pub fn decode_producer(raw: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(Bytes::copy_from_slice(raw));
    header(&mut r, "producer record version")?;
    let sequence = r.u64()?;
    r.finish("producer record")?;
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::FieldValue;

    #[test]
    fn producer_records_round_trip_and_refuse_damage() {
        for seq in [0, 1, 0x0102_0304_0506_0708, u64::MAX] {
            assert_eq!(decode_producer(&encode_producer(seq)), Ok(seq));
        }
        let good = encode_producer(7);
        assert!(decode_producer(&good[..8]).is_err(), "short");
        let mut bad = good;
        bad[0] = 99;
        assert!(decode_producer(&bad).is_err(), "unknown version");
        let mut long = good.to_vec();
        long.push(0);
        assert!(decode_producer(&long).is_err(), "trailing bytes");
    }

    #[test]
    fn records_outside_the_default_vhost_carry_it_and_those_in_it_are_unchanged() {
        let q = QueueRecord {
            vhost: "prod".into(),
            id: 3,
            name: "jobs".into(),
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        assert_eq!(q.encode()[0], RECORD_IN_VHOST);
        assert_eq!(QueueRecord::decode(&q.encode()).unwrap(), q);
        let in_default = QueueRecord {
            vhost: DEFAULT_VHOST.into(),
            ..q.clone()
        };
        assert_eq!(in_default.encode()[0], RECORD_V1);
        let e = ExchangeRecord {
            vhost: "prod".into(),
            name: "logs".into(),
            kind: ExchangeKind::Fanout,
            arguments: FieldTable::new(),
            auto_delete: true,
            internal: false,
        };
        assert_eq!(ExchangeRecord::decode(&e.encode()).unwrap(), e);
        for destination_kind in [DestinationKind::Queue, DestinationKind::Exchange] {
            let b = BindingRecord {
                vhost: "prod".into(),
                exchange: "logs".into(),
                destination: "jobs".into(),
                destination_kind,
                routing_key: "k".into(),
                arguments: FieldTable::new(),
            };
            assert_eq!(BindingRecord::decode(&b.encode()).unwrap(), b);
        }
        let v = VhostRecord {
            name: "prod".into(),
        };
        assert_eq!(VhostRecord::decode(&v.encode()).unwrap(), v);
        assert_eq!(entity_key("/", "jobs"), "jobs");
        assert_ne!(entity_key("prod", "jobs"), "jobs");
    }

    #[test]
    fn user_and_permission_records_roundtrip() {
        for u in [
            UserRecord {
                name: "ops".into(),
                password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
                tags: vec!["administrator".into(), "monitoring".into()],
            },
            UserRecord {
                name: "imported".into(),
                password_hash: None,
                tags: vec![],
            },
        ] {
            assert_eq!(UserRecord::decode(&u.encode()).unwrap(), u);
        }
        let p = PermissionRecord {
            user: "ops".into(),
            vhost: "/".into(),
            configure: "^amq\\.gen.*".into(),
            write: ".*".into(),
            read: "".into(),
        };
        assert_eq!(PermissionRecord::decode(&p.encode()).unwrap(), p);
        assert!(UserRecord::decode(&[1, 0]).is_err());
    }

    #[test]
    fn records_roundtrip() {
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::Int(10));
        let q = QueueRecord {
            vhost: DEFAULT_VHOST.into(),
            id: 7,
            name: "jobs".into(),
            exclusive: false,
            auto_delete: true,
            arguments: args.clone(),
        };
        assert_eq!(QueueRecord::decode(&q.encode()).unwrap(), q);
        let e = ExchangeRecord {
            vhost: DEFAULT_VHOST.into(),
            name: "logs".into(),
            kind: ExchangeKind::Topic,
            arguments: args.clone(),
            auto_delete: false,
            internal: false,
        };
        assert_eq!(ExchangeRecord::decode(&e.encode()).unwrap(), e);
        // Without flags the record is the one stored before they existed: no flags byte.
        let plain = e.encode();
        let flagged = ExchangeRecord {
            internal: true,
            ..e.clone()
        };
        assert_eq!(flagged.encode().len(), plain.len() + 1);
        assert_eq!(ExchangeRecord::decode(&flagged.encode()).unwrap(), flagged);
        let mut unknown = plain.clone();
        unknown.push(0x80);
        assert!(ExchangeRecord::decode(&unknown).is_err());
        let b = BindingRecord {
            vhost: DEFAULT_VHOST.into(),
            exchange: "logs".into(),
            destination: "jobs".into(),
            destination_kind: DestinationKind::Queue,
            routing_key: "a.#".into(),
            arguments: args,
        };
        assert_eq!(BindingRecord::decode(&b.encode()).unwrap(), b);
        // A queue binding stays version 1, byte for byte as before exchange bindings.
        assert_eq!(b.encode()[0], RECORD_V1);
        let x = BindingRecord {
            vhost: DEFAULT_VHOST.into(),
            destination: "audit".into(),
            destination_kind: DestinationKind::Exchange,
            ..b
        };
        assert_eq!(BindingRecord::decode(&x.encode()).unwrap(), x);
        let m = Message {
            write: Default::default(),
            exchange: "logs".into(),
            routing_key: "a.b".into(),
            properties: Properties {
                persistent: true,
                message_id: Some("m1".into()),
                ..Properties::default()
            },
            body: Bytes::from_static(b"hello"),
        };
        let mut buf = BytesMut::new();
        encode_message(&m, &mut buf);
        assert_eq!(decode_message(&buf).unwrap(), m);
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(QueueRecord::decode(&[9, 1, 2]).is_err());
        assert!(decode_message(&[]).is_err());
        assert!(BindingRecord::decode(&[1, 255, 255]).is_err());
    }
}
