//! Exchange and queue methods (`exchange.declare` … `queue.delete`): each becomes the
//! native request it stands for, is authorised by the native check
//! ([`crate::connection::authorize`]) and runs on the broker's topology path, so both doors
//! share one set of rules, permissions, limits and refusals. Only the translation lives
//! here: AMQP's field tables to Warren's (type for type), and the `-ok` replies.

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable as AmqpTable, ShortString};
use bytes::Bytes;
use warren_protocol::{
    ExchangeBind, ExchangeDeclare, ExchangeKind, FieldTable, FieldValue, Frame, QueueBind,
    QueueDeclare,
};

use crate::broker::session::Session;
use crate::broker::Broker;
use crate::connection::authorize::{authorize, PublishGrants};
use crate::error::BrokerError;

/// What an exchange or queue method came to: the reply to send (`None` with `nowait`).
pub(super) type Outcome = Result<Option<AMQPClass>, Refusal>;

/// Why a topology method was refused.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The broker refused it (a channel or connection error by its code).
    Broker(BrokerError),
    /// Something the AMQP door itself does not accept: a connection error with this code
    /// (RabbitMQ's `COMMAND_INVALID` for an unknown exchange type).
    Connection(warren_protocol::ErrorCode, String),
}

impl From<BrokerError> for Refusal {
    fn from(e: BrokerError) -> Self {
        Refusal::Broker(e)
    }
}

/// Runs one exchange or queue method for `session`. `method` must be one of them.
pub(super) async fn run(
    broker: &Broker,
    session: &Session,
    grants: &mut PublishGrants,
    method: AMQPClass,
) -> Outcome {
    let check = |frame: &Frame, grants: &mut PublishGrants| authorize(&session.user, frame, grants);
    match method {
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
            // RabbitMQ ignores the type of a passive declare.
            let kind = if d.passive {
                ExchangeKind::Direct
            } else {
                exchange_kind(d.kind.as_str())?
            };
            let frame = Frame::ExchangeDeclare(ExchangeDeclare {
                name: d.exchange.to_string(),
                kind,
                durable: d.durable,
                passive: d.passive,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: table(&d.arguments),
            });
            check(&frame, grants)?;
            let Frame::ExchangeDeclare(native) = frame else {
                return Ok(None);
            };
            broker.declare_exchange(session, native).await?;
            Ok(reply(
                d.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
            ))
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
            let frame = Frame::ExchangeDelete(warren_protocol::ExchangeDelete {
                name: d.exchange.to_string(),
                if_unused: d.if_unused,
            });
            check(&frame, grants)?;
            broker
                .delete_exchange(session, d.exchange.as_str(), d.if_unused)
                .await?;
            Ok(reply(
                d.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
            ))
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => {
            let native = exchange_bind(&b.destination, &b.source, &b.routing_key, &b.arguments);
            check(&Frame::ExchangeBind(native.clone()), grants)?;
            broker.bind_exchange(session, native).await?;
            Ok(reply(
                b.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
            ))
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => {
            let native = exchange_bind(&b.destination, &b.source, &b.routing_key, &b.arguments);
            check(&Frame::ExchangeUnbind(native.clone()), grants)?;
            broker.unbind_exchange(session, native).await?;
            Ok(reply(
                b.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
            ))
        }
        AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
            let native = QueueDeclare {
                name: d.queue.to_string(),
                durable: d.durable,
                exclusive: d.exclusive,
                auto_delete: d.auto_delete,
                passive: d.passive,
                arguments: table(&d.arguments),
            };
            check(&Frame::QueueDeclare(native.clone()), grants)?;
            let declared = broker.declare_queue(session, native).await?;
            Ok(reply(
                d.nowait,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: ShortString::try_new(declared.name)
                        .unwrap_or_else(|_| ShortString::from(String::new())),
                    message_count: saturate(declared.message_count),
                    consumer_count: declared.consumer_count,
                })),
            ))
        }
        AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
            let native = queue_bind(&b.queue, &b.exchange, &b.routing_key, &b.arguments);
            check(&Frame::QueueBind(native.clone()), grants)?;
            broker.bind(session, native).await?;
            Ok(reply(
                b.nowait,
                AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
            ))
        }
        AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => {
            let native = queue_bind(&b.queue, &b.exchange, &b.routing_key, &b.arguments);
            check(&Frame::QueueUnbind(native.clone()), grants)?;
            broker.unbind(session, native).await?;
            // queue.unbind has no nowait.
            Ok(Some(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                queue::UnbindOk {},
            ))))
        }
        AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
            let name = p.queue.to_string();
            check(&Frame::QueuePurge { name: name.clone() }, grants)?;
            let purged = broker.purge_queue(session, &name).await?;
            Ok(reply(
                p.nowait,
                AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: saturate(purged),
                })),
            ))
        }
        AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
            let frame = Frame::QueueDelete(warren_protocol::QueueDelete {
                name: d.queue.to_string(),
                if_unused: d.if_unused,
                if_empty: d.if_empty,
            });
            check(&frame, grants)?;
            let deleted = broker
                .delete_queue(session, d.queue.as_str(), d.if_unused, d.if_empty)
                .await?;
            Ok(reply(
                d.nowait,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: saturate(deleted),
                })),
            ))
        }
        other => Err(Refusal::Connection(
            warren_protocol::ErrorCode::InternalError,
            format!("not a topology method: {other:?}"),
        )),
    }
}

fn reply(nowait: bool, ok: AMQPClass) -> Option<AMQPClass> {
    (!nowait).then_some(ok)
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn exchange_kind(name: &str) -> Result<ExchangeKind, Refusal> {
    Ok(match name {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        // RabbitMQ's words and code (a connection error there too).
        other => {
            return Err(Refusal::Connection(
                warren_protocol::ErrorCode::CommandInvalid,
                format!("invalid exchange type '{}'", crate::clip::name(other)),
            ))
        }
    })
}

fn exchange_bind(
    destination: &ShortString,
    source: &ShortString,
    routing_key: &ShortString,
    arguments: &AmqpTable,
) -> ExchangeBind {
    ExchangeBind {
        destination: destination.to_string(),
        source: source.to_string(),
        routing_key: routing_key.to_string(),
        arguments: table(arguments),
    }
}

fn queue_bind(
    queue: &ShortString,
    exchange: &ShortString,
    routing_key: &ShortString,
    arguments: &AmqpTable,
) -> QueueBind {
    QueueBind {
        queue: queue.to_string(),
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
        arguments: table(arguments),
    }
}

/// An AMQP field table as Warren's, keeping each value's type: Warren's table has a type
/// for every AMQP one. A long string that is UTF-8 becomes a string (RabbitMQ's clients send
/// text as long strings), any other a byte string.
pub(super) fn table(t: &AmqpTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.to_string(), value(v)))
        .collect()
}

fn value(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => FieldValue::I8(*i),
        AMQPValue::ShortShortUInt(i) => FieldValue::U8(*i),
        AMQPValue::ShortInt(i) => FieldValue::I16(*i),
        AMQPValue::ShortUInt(i) => FieldValue::U16(*i),
        AMQPValue::LongInt(i) => FieldValue::I32(*i),
        AMQPValue::LongUInt(i) => FieldValue::U32(*i),
        AMQPValue::LongLongInt(i) => FieldValue::Int(*i),
        AMQPValue::Float(f) => FieldValue::F32(*f),
        AMQPValue::Double(f) => FieldValue::Float(*f),
        AMQPValue::DecimalValue(d) => FieldValue::Decimal {
            scale: d.scale,
            // The spec's decimal value is a signed 32-bit integer; amq-protocol keeps the
            // same bits unsigned.
            value: i32::from_le_bytes(d.value.to_le_bytes()),
        },
        AMQPValue::ShortString(s) => FieldValue::String(s.to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => FieldValue::String(text.to_owned()),
            Err(_) => FieldValue::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(a) => FieldValue::List(a.as_slice().iter().map(value).collect()),
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Map(table(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => FieldValue::Void,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{DecimalValue, FieldArray};

    #[test]
    fn every_amqp_field_type_keeps_its_type() {
        let mut t = AmqpTable::default();
        let mut nested = AmqpTable::default();
        nested.insert("n".into(), AMQPValue::ShortInt(-2));
        let cases: Vec<(&str, AMQPValue, FieldValue)> = vec![
            ("t", AMQPValue::Boolean(true), FieldValue::Bool(true)),
            ("b", AMQPValue::ShortShortInt(-1), FieldValue::I8(-1)),
            ("B", AMQPValue::ShortShortUInt(200), FieldValue::U8(200)),
            ("s", AMQPValue::ShortInt(-300), FieldValue::I16(-300)),
            ("u", AMQPValue::ShortUInt(60_000), FieldValue::U16(60_000)),
            ("I", AMQPValue::LongInt(-70_000), FieldValue::I32(-70_000)),
            (
                "i",
                AMQPValue::LongUInt(4_000_000_000),
                FieldValue::U32(4_000_000_000),
            ),
            ("l", AMQPValue::LongLongInt(-5), FieldValue::Int(-5)),
            ("f", AMQPValue::Float(1.5), FieldValue::F32(1.5)),
            ("d", AMQPValue::Double(2.5), FieldValue::Float(2.5)),
            (
                "D",
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 314,
                }),
                FieldValue::Decimal {
                    scale: 2,
                    value: 314,
                },
            ),
            (
                "S",
                AMQPValue::LongString(b"text".to_vec().into()),
                FieldValue::String("text".into()),
            ),
            (
                "S-binary",
                AMQPValue::LongString(vec![0xFF, 0xFE].into()),
                FieldValue::Bytes(Bytes::from_static(&[0xFF, 0xFE])),
            ),
            (
                "x",
                AMQPValue::ByteArray(vec![1, 2].into()),
                FieldValue::Bytes(Bytes::from_static(&[1, 2])),
            ),
            (
                "T",
                AMQPValue::Timestamp(1_700_000_000),
                FieldValue::Timestamp(1_700_000_000),
            ),
            ("V", AMQPValue::Void, FieldValue::Void),
            (
                "A",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongLongInt(1)])),
                FieldValue::List(vec![FieldValue::Int(1)]),
            ),
            (
                "F",
                AMQPValue::FieldTable(nested),
                FieldValue::Map(
                    [("n".to_owned(), FieldValue::I16(-2))]
                        .into_iter()
                        .collect(),
                ),
            ),
        ];
        for (key, amqp, _) in &cases {
            t.insert((*key).into(), amqp.clone());
        }
        let converted = table(&t);
        for (key, _, expected) in cases {
            assert_eq!(converted.get(key), Some(&expected), "{key}");
        }
    }

    #[test]
    fn unknown_exchange_types_are_refused_as_rabbitmq_refuses_them() {
        assert!(matches!(
            exchange_kind("x-consistent-hash"),
            Err(Refusal::Connection(
                warren_protocol::ErrorCode::CommandInvalid,
                _
            ))
        ));
        assert!(matches!(exchange_kind("topic"), Ok(ExchangeKind::Topic)));
    }
}
