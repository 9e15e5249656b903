//! How the Warren connection says what the broker tells it: each broker [`Event`] becomes one
//! [`Frame`], with the request id it answers. This is the only place that mapping lives; the
//! broker itself never sees a frame (an AMQP front end would map the same events to AMQP
//! methods). Deliveries do not pass through here: the writer encodes them straight from the
//! shared message (`DeliverRef`).

use std::sync::Arc;

use warren_protocol::{
    Close, ConsumerCancelled, ConsumerTag, Envelope, ErrorFrame, Frame, GetOk, QueueDeclareOk,
    Return,
};

use crate::broker::event::{Confirm, Event, RequestId};

/// The frame that carries `event`, answering `request_id` (0: none); `None` for an event
/// that is said to no one ([`Event::Settled`], a no-confirm publish taken).
pub(super) fn envelope(request_id: RequestId, event: Event) -> Option<Envelope> {
    frame(event).map(|f| Envelope::new(request_id, f))
}

/// Whether `event` finishes a publish: a publisher confirm, or a no-confirm publish settled
/// without one. The writer returns a publish permit for each one it handles, written or not.
pub(super) fn is_confirm(event: &Event) -> bool {
    matches!(event, Event::Confirm(_) | Event::Settled)
}

fn frame(event: Event) -> Option<Frame> {
    Some(match event {
        Event::Settled => return None,
        Event::Ok => Frame::Ok,
        Event::QueueDeclareOk(q) => Frame::QueueDeclareOk(QueueDeclareOk {
            name: q.name,
            message_count: q.message_count,
            consumer_count: q.consumer_count,
        }),
        Event::QueueDeleteOk { message_count } => Frame::QueueDeleteOk { message_count },
        Event::QueuePurgeOk { message_count } => Frame::QueuePurgeOk { message_count },
        Event::ConsumeOk { consumer_tag } => Frame::ConsumeOk(ConsumerTag { consumer_tag }),
        Event::ConsumerCancelled {
            consumer_tag,
            code,
            reason,
        } => Frame::ConsumerCancelled(ConsumerCancelled {
            consumer_tag,
            code: code.as_u16(),
            reason,
        }),
        Event::GetOk(got) => {
            let m = &got.message;
            Frame::GetOk(Box::new(GetOk {
                delivery_tag: got.delivery_tag,
                redelivered: got.acquired_count > 0,
                delivery_count: got.delivery_count,
                acquired_count: got.acquired_count,
                message_count: got.message_count,
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
                properties: m.properties.clone(),
                body: m.body.clone(),
            }))
        }
        Event::GetEmpty => Frame::GetEmpty,
        Event::Confirm(Confirm::Ack) => Frame::Confirm(warren_protocol::Confirm::Ack),
        Event::Confirm(Confirm::Duplicate) => Frame::Confirm(warren_protocol::Confirm::Duplicate),
        Event::Confirm(Confirm::Nack { code, reason }) => {
            Frame::Confirm(warren_protocol::Confirm::Nack {
                code: code.as_u16(),
                reason,
            })
        }
        Event::Returned {
            message,
            code,
            text,
        } => {
            // The broker builds a returned message for the return alone, so its fields move
            // into the frame; a shared one is copied.
            let m = Arc::try_unwrap(message).unwrap_or_else(|shared| (*shared).clone());
            Frame::Return(Box::new(Return {
                reply_code: code.as_u16(),
                reply_text: text,
                exchange: m.exchange,
                routing_key: m.routing_key,
                properties: m.properties,
                body: m.body,
            }))
        }
        Event::AdminOk { json } => Frame::AdminOk { body: json },
        Event::Error { code, text } => Frame::Error(ErrorFrame::new(code, text)),
        Event::Close { code, reason } => Frame::Close(Close {
            code: code.as_u16(),
            reason,
        }),
        Event::CloseOk => Frame::CloseOk,
        Event::Blocked { reason } => Frame::Blocked { reason },
        Event::Unblocked => Frame::Unblocked,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use warren_protocol::{ErrorCode, Properties};

    use super::*;
    use crate::broker::event::{DeclaredQueue, GotMessage};
    use crate::message::Message;

    fn message() -> Arc<Message> {
        Arc::new(Message {
            write: Default::default(),
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: Properties::default(),
            body: Bytes::from_static(b"hi"),
        })
    }

    fn framed(event: Event) -> Frame {
        frame(event).expect("an event that is written")
    }

    #[test]
    fn confirms_carry_the_request_id_and_the_code_as_a_number() {
        assert_eq!(
            envelope(7, Event::Confirm(Confirm::Ack)),
            Some(Envelope::new(
                7,
                Frame::Confirm(warren_protocol::Confirm::Ack)
            ))
        );
        let nack = Event::Confirm(Confirm::Nack {
            code: ErrorCode::ResourceError,
            reason: "full".into(),
        });
        assert!(is_confirm(&nack));
        assert_eq!(
            envelope(8, nack),
            Some(Envelope::new(
                8,
                Frame::Confirm(warren_protocol::Confirm::Nack {
                    code: 506,
                    reason: "full".into()
                })
            ))
        );
        assert!(!is_confirm(&Event::Ok));
        // A no-confirm publish taken: counted, never written.
        assert!(is_confirm(&Event::Settled));
        assert_eq!(envelope(9, Event::Settled), None);
    }

    #[test]
    fn a_returned_message_keeps_its_fields() {
        let frame = framed(Event::Returned {
            message: message(),
            code: ErrorCode::NoRoute,
            text: "NO_ROUTE".into(),
        });
        assert_eq!(
            frame,
            Frame::Return(Box::new(Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "x".into(),
                routing_key: "k".into(),
                properties: Properties::default(),
                body: Bytes::from_static(b"hi"),
            }))
        );
    }

    #[test]
    fn get_ok_is_redelivered_once_acquired_before() {
        let got = |delivery_count, acquired_count| GotMessage {
            delivery_tag: 3,
            delivery_count,
            acquired_count,
            message_count: 5,
            message: message(),
        };
        let Frame::GetOk(first) = framed(Event::GetOk(got(0, 0))) else {
            panic!("not a GetOk");
        };
        assert!(!first.redelivered);
        assert_eq!((first.delivery_tag, first.message_count), (3, 5));
        assert_eq!(first.body, Bytes::from_static(b"hi"));
        // Returned by nacks only: no failure, but delivered before.
        let Frame::GetOk(returned) = framed(Event::GetOk(got(0, 2))) else {
            panic!("not a GetOk");
        };
        assert!(returned.redelivered);
        assert_eq!((returned.delivery_count, returned.acquired_count), (0, 2));
        let Frame::GetOk(again) = framed(Event::GetOk(got(2, 3))) else {
            panic!("not a GetOk");
        };
        assert!(again.redelivered);
        assert_eq!((again.delivery_count, again.acquired_count), (2, 3));
    }

    #[test]
    fn replies_and_notices_map_to_their_frames() {
        assert_eq!(
            framed(Event::QueueDeclareOk(DeclaredQueue {
                name: "q".into(),
                message_count: 1,
                consumer_count: 2,
            })),
            Frame::QueueDeclareOk(QueueDeclareOk {
                name: "q".into(),
                message_count: 1,
                consumer_count: 2,
            })
        );
        assert_eq!(
            framed(Event::ConsumerCancelled {
                consumer_tag: "c".into(),
                code: ErrorCode::NotFound,
                reason: "gone".into(),
            }),
            Frame::ConsumerCancelled(ConsumerCancelled {
                consumer_tag: "c".into(),
                code: 404,
                reason: "gone".into(),
            })
        );
        assert_eq!(
            framed(Event::Error {
                code: ErrorCode::InternalError,
                text: "disk".into(),
            }),
            Frame::Error(ErrorFrame::new(ErrorCode::InternalError, "disk"))
        );
        assert_eq!(
            framed(Event::Close {
                code: ErrorCode::Normal,
                reason: "bye".into(),
            }),
            Frame::Close(Close {
                code: 200,
                reason: "bye".into(),
            })
        );
    }
}
