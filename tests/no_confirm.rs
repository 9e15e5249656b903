//! Confirm-less publish (the `Publish` no-confirm flag, PROTOCOL.md §9): a taken message gets
//! no `Confirm`, a refused one still gets its Nack, `Error` or `Return`, the message is
//! stored and ordered as a confirmed one, and a fast publisher is still held back by the
//! connection's publishes in flight.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{durable_queue, within, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use warren::client::{Client, ConsumeOptions, OutgoingMessage, QueueOptions, RefusalKind};
use warren_protocol::{
    client_preface, Confirm, Envelope, FieldTable, FieldValue, Frame, FrameCodec, Mechanism, Open,
    Properties, Publish, PROTOCOL_VERSION,
};

/// A raw connection: frames written by hand, frames read one at a time.
struct Raw {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Raw {
    /// Connects, takes `Hello` and opens the connection as guest on `/`.
    async fn open(d: &TestDaemon) -> Raw {
        let stream = TcpStream::connect(d.addr()).await.unwrap();
        let mut raw = Raw {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
        };
        raw.stream
            .write_all(&client_preface(PROTOCOL_VERSION))
            .await
            .unwrap();
        let hello = raw.next().await;
        assert!(matches!(hello.frame, Frame::Hello(_)), "{hello:?}");
        raw.send(
            1,
            Frame::Open(Open {
                mechanism: Mechanism::Password,
                user: "guest".into(),
                password: Bytes::from_static(b"guest"),
                vhost: "/".into(),
            }),
        )
        .await;
        assert_eq!(raw.next().await, Envelope::new(1, Frame::Ok));
        raw
    }

    async fn send(&mut self, id: u64, frame: Frame) {
        self.stream
            .write_all(&Envelope::new(id, frame).to_bytes())
            .await
            .unwrap();
    }

    async fn publish(
        &mut self,
        id: u64,
        exchange: &str,
        key: &str,
        mandatory: bool,
        no_confirm: bool,
    ) {
        let p = Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            no_confirm,
            properties: Properties::default(),
            body: Bytes::from(format!("m{id}")),
        };
        self.send(id, Frame::Publish(Box::new(p))).await;
    }

    /// The next frame (heartbeats are off by default in tests, so none interleave).
    async fn next(&mut self) -> Envelope {
        loop {
            if let Some(env) = self
                .codec
                .decode(&mut self.buf)
                .expect("server frames decode")
            {
                return env;
            }
            let mut chunk = [0u8; 4096];
            let n = within("a frame from the server", self.stream.read(&mut chunk))
                .await
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Frames until (and with) the first that `last` accepts.
    async fn until(&mut self, last: impl Fn(&Envelope) -> bool) -> Vec<Envelope> {
        let mut out = Vec::new();
        loop {
            let env = self.next().await;
            let done = last(&env);
            out.push(env);
            if done {
                return out;
            }
        }
    }
}

fn is_ack(env: &Envelope, id: u64) -> bool {
    env.request_id == id && env.frame == Frame::Confirm(Confirm::Ack)
}

/// Waits (bounded) until the client has kept `n` refusals.
async fn wait_refused(c: &Client, n: u64) {
    within(&format!("{n} refusals"), async {
        while c.refused_count() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_taken_no_confirm_publish_gets_no_reply_and_a_refused_one_gets_its_error() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("q", QueueOptions::default()).await.unwrap();
    let mut raw = Raw::open(&d).await;
    raw.publish(2, "", "q", false, true).await;
    raw.publish(3, "", "q", false, true).await;
    // An unknown exchange: refused with an Error, flag or no flag.
    raw.publish(4, "nope", "q", false, true).await;
    // Mandatory and unroutable: returned, with no Confirm after the Return.
    raw.publish(5, "", "nowhere", true, true).await;
    raw.publish(6, "", "q", false, false).await;
    let mut frames = raw.until(|e| is_ack(e, 6)).await;
    // The Error and the Return are sent as the publishes are read, the Ack after a commit:
    // they come first; wait (bounded) for any still on its way, to be sure.
    while !frames.iter().any(|e| e.request_id == 4) || !frames.iter().any(|e| e.request_id == 5) {
        frames.push(raw.next().await);
    }
    let ids: Vec<u64> = frames.iter().map(|e| e.request_id).collect();
    assert!(
        !ids.contains(&2) && !ids.contains(&3),
        "no reply for a taken no-confirm publish: {frames:?}"
    );
    let error = frames.iter().find(|e| e.request_id == 4).unwrap();
    assert!(
        matches!(&error.frame, Frame::Error(e) if e.code == 404),
        "{error:?}"
    );
    let returned: Vec<_> = frames.iter().filter(|e| e.request_id == 5).collect();
    assert_eq!(returned.len(), 1, "a Return and nothing else: {frames:?}");
    assert!(
        matches!(returned[0].frame, Frame::Return(_)),
        "{returned:?}"
    );
    assert_eq!(frames.len(), 3, "{frames:?}");
    // Both taken messages are in the queue, before the confirmed one.
    for want in ["m2", "m3", "m6"] {
        let got = c.get("q", true).await.unwrap().expect("a message");
        assert_eq!(got.body, Bytes::from(want));
    }
}

#[tokio::test]
async fn a_no_confirm_publish_to_a_full_queue_still_gets_its_nack() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let mut args = FieldTable::new();
    args.insert("x-max-length".into(), FieldValue::Int(1));
    args.insert(
        "x-overflow".into(),
        FieldValue::String("reject-publish".into()),
    );
    durable_queue(&c, "full", args).await;
    c.declare_queue("other", QueueOptions::default())
        .await
        .unwrap();

    // Raw: the Nack frame itself, for the publish's request id.
    let mut raw = Raw::open(&d).await;
    raw.publish(2, "", "full", false, true).await;
    raw.publish(3, "", "full", false, true).await;
    raw.publish(4, "", "other", false, false).await;
    let frames = raw.until(|e| is_ack(e, 4)).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].request_id, 3);
    assert!(
        matches!(
            &frames[0].frame,
            Frame::Confirm(Confirm::Nack { code: 506, .. })
        ),
        "{frames:?}"
    );

    // Through the client library: kept as a refusal naming the publish.
    let refused = c
        .publish_unconfirmed(OutgoingMessage::new("", "full", "late"))
        .await
        .unwrap();
    let checkpoint = c
        .publish_and_confirm(OutgoingMessage::new("", "other", "x"))
        .await
        .unwrap();
    assert!(checkpoint.is_confirmed());
    // A Nack precedes the later Ack: it is already kept.
    assert_eq!(c.refused_count(), 1);
    let refusals = c.take_refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].request_id, refused);
    assert!(
        matches!(&refusals[0].kind, RefusalKind::Nacked { code: 506, reason } if reason.contains("full")),
        "{refusals:?}"
    );
    assert!(c.take_refusals().is_empty(), "taken once");
}

#[tokio::test]
async fn the_client_keeps_errors_and_returns_of_unconfirmed_publishes() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let unknown = c
        .publish_unconfirmed(OutgoingMessage::new("nope", "k", "a"))
        .await
        .unwrap();
    let unroutable = c
        .publish_unconfirmed(OutgoingMessage::new("", "nowhere", "b").mandatory())
        .await
        .unwrap();
    // Not mandatory and unroutable: dropped as RabbitMQ drops it, nothing to say.
    c.publish_unconfirmed(OutgoingMessage::new("", "nowhere", "c"))
        .await
        .unwrap();
    wait_refused(&c, 2).await;
    let refusals = c.take_refusals();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[0].request_id, unknown);
    assert!(
        matches!(&refusals[0].kind, RefusalKind::Error { code: 404, .. }),
        "{refusals:?}"
    );
    assert_eq!(refusals[1].request_id, unroutable);
    assert!(
        matches!(
            &refusals[1].kind,
            RefusalKind::Returned {
                reply_code: 312,
                ..
            }
        ),
        "{refusals:?}"
    );
    // The connection goes on.
    assert!(c
        .publish_and_confirm(OutgoingMessage::new("", "nowhere", "d"))
        .await
        .unwrap()
        .is_confirmed());
    assert_eq!(c.refused_count(), 2);
}

#[tokio::test]
async fn confirmed_and_unconfirmed_publishes_keep_one_order() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("mixed", QueueOptions::default())
        .await
        .unwrap();
    let n = 2_000u32;
    let mut pending = Vec::new();
    for i in 0..n {
        let m = OutgoingMessage::new("", "mixed", i.to_le_bytes().to_vec());
        // Runs of each kind, of varying length.
        if (i / 7) % 3 == 0 {
            pending.push(c.publish(m).await.unwrap());
        } else {
            c.publish_unconfirmed(m).await.unwrap();
        }
    }
    for p in pending {
        assert!(p.await.unwrap().is_confirmed());
    }
    let last = c
        .publish_and_confirm(OutgoingMessage::new("", "mixed", n.to_le_bytes().to_vec()))
        .await
        .unwrap();
    assert!(last.is_confirmed());
    let mut consumer = c
        .consume(
            "mixed",
            ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for want in 0..=n {
        let got = within("a delivery", consumer.next())
            .await
            .expect("delivery");
        assert_eq!(got.body.as_ref(), want.to_le_bytes(), "message {want}");
    }
    assert_eq!(c.refused_count(), 0);
}

#[tokio::test]
async fn persistent_no_confirm_messages_survive_a_restart_once_a_later_publish_is_confirmed() {
    let mut d = TestDaemon::start();
    let n = 500u32;
    {
        let c = d.client().await;
        durable_queue(&c, "keep", FieldTable::new()).await;
        for i in 0..n {
            c.publish_unconfirmed(
                OutgoingMessage::new("", "keep", i.to_le_bytes().to_vec()).persistent(),
            )
            .await
            .unwrap();
        }
        // Confirms are in commit order: this Ack covers every publish before it.
        let last = c
            .publish_and_confirm(
                OutgoingMessage::new("", "keep", n.to_le_bytes().to_vec()).persistent(),
            )
            .await
            .unwrap();
        assert!(last.is_confirmed());
        assert_eq!(c.refused_count(), 0);
    }
    assert!(d.stop(), "a clean stop");
    d.restart();
    let c = d.client().await;
    for want in 0..=n {
        let got = c
            .get("keep", true)
            .await
            .unwrap()
            .expect("a stored message");
        assert_eq!(got.body.as_ref(), want.to_le_bytes(), "message {want}");
    }
    assert!(c.get("keep", true).await.unwrap().is_none());
}

#[tokio::test]
async fn a_fast_no_confirm_publisher_is_held_back_and_loses_nothing() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("flood", QueueOptions::default())
        .await
        .unwrap();
    let before = d.rss_bytes();
    // Far more than the 8,192 publishes in flight a connection may have: if a taken
    // no-confirm publish did not give its permit back, this would stall at 8,192.
    let n = 200_000u32;
    let body_bytes = 64usize;
    let consumer_client = d.client().await;
    let mut consumer = consumer_client
        .consume(
            "flood",
            ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let check = tokio::spawn(async move {
        for want in 0..n {
            let got = within("a delivery", consumer.next())
                .await
                .expect("delivery");
            let mut idx = [0u8; 4];
            idx.copy_from_slice(&got.body[..4]);
            assert_eq!(u32::from_le_bytes(idx), want, "in order");
        }
        consumer
    });
    let mut peak = before;
    for i in 0..n {
        let mut body = vec![0u8; body_bytes];
        body[..4].copy_from_slice(&i.to_le_bytes());
        // Bounded each: a publisher whose permits never come back stalls here, and fails.
        within(
            "room to publish",
            c.publish_unconfirmed(OutgoingMessage::new("", "flood", body)),
        )
        .await
        .unwrap();
        if i % 20_000 == 0 {
            peak = peak.max(d.rss_bytes());
        }
    }
    assert!(c
        .publish_and_confirm(OutgoingMessage::new("", "nowhere", "end"))
        .await
        .unwrap()
        .is_confirmed());
    peak = peak.max(d.rss_bytes());
    let _consumer = within("every delivery", check).await.unwrap();
    assert_eq!(c.refused_count(), 0);
    // Generous: even if every message sat in the daemon at once (the consumer may lag),
    // 200,000 messages of 64 bytes with their bookkeeping are far below this; unbounded
    // buffering of frames and replies would not be.
    let bound = before + u64::from(n) * 2048;
    eprintln!("daemon RSS: {before} bytes before, {peak} at the peak, bound {bound}");
    assert!(
        peak < bound,
        "daemon RSS {peak} bytes, started at {before}, bound {bound}"
    );
}

#[test]
fn bench_runs_without_confirms_against_the_daemon() {
    let d = TestDaemon::start();
    let out = d.cli(&[
        "bench",
        "--server",
        d.addr(),
        "--transient",
        "--messages",
        "5000",
        "--no-confirm",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("messages        5000"), "{report}");
    assert!(report.contains("msgs/s sent"), "{report}");
}
