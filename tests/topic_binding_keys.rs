//! Topic binding keys with more than two `#` words, against the real daemon: refused at
//! bind time (406 naming the key, as RabbitMQ 4.3.5+), allowed to unbind, and still loaded
//! (with a warning) when an earlier Warren stored one.

mod common;

use common::{ok, ready, TestDaemon};
use warren::client::{ExchangeKind, ExchangeOptions, OutgoingMessage, QueueOptions};
use warren::store::codec::{BindingRecord, DestinationKind};
use warren::store::{Store, TopologyChange};
use warren_protocol::{ErrorCode, FieldTable};

const THREE_HASHES: &str = "a.#.b.#.c.#";

async fn durable_topic_and_queue(c: &warren::client::Client) {
    c.declare_exchange(
        "t",
        ExchangeKind::Topic,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.declare_queue(
        "q",
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn more_than_two_hash_words_are_refused_at_bind_time() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_topic_and_queue(&c).await;
    let err = c
        .bind("q", "t", THREE_HASHES, FieldTable::new())
        .await
        .expect_err("three # words");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): topic binding key 'a.#.b.#.c.#' has 3 '#' words; at most 2 \
         are allowed"
    );
    // Two are fine, `#` inside a word is not a `#` word, and other kinds take any key.
    c.bind("q", "t", "#.x.#", FieldTable::new()).await.unwrap();
    c.bind("q", "t", "a#.b#.c#.d#", FieldTable::new())
        .await
        .unwrap();
    c.bind("q", "amq.direct", THREE_HASHES, FieldTable::new())
        .await
        .unwrap();
    // Unbinding such a key is allowed (there is nothing to remove, and that succeeds).
    c.unbind("q", "t", THREE_HASHES, FieldTable::new())
        .await
        .unwrap();

    // The CLI says the same, and so does a definitions import, before changing anything.
    let out = d.cli(&["bind", "q", "t", "--key", "#.#.#"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PRECONDITION_FAILED (406): topic binding key '#.#.#' has 3 '#' words"),
        "{stderr}"
    );
    let file = d.data_dir().join("defs.json");
    std::fs::write(
        &file,
        r##"{"exchanges": [{"name": "t2", "type": "topic", "durable": true}],
            "queues": [],
            "bindings": [{"source": "t2", "destination": "q", "routing_key": "#.#.#"}]}"##,
    )
    .unwrap();
    let out = d.cli(&["definitions", "import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("topic binding key '#.#.#' has 3 '#' words"),
        "{stderr}"
    );
    let exchanges = ok(&d.cli(&["exchange", "list"]));
    assert!(!exchanges.contains("t2"), "nothing imported: {exchanges}");
}

#[tokio::test]
async fn a_stored_binding_with_more_hash_words_still_loads_and_can_be_unbound() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    durable_topic_and_queue(&c).await;
    drop(c);
    assert!(d.stop(), "the daemon stops cleanly");
    {
        // What an earlier Warren, which had no limit, left on disk.
        let (store, _) = Store::open(d.data_dir()).expect("opening the stopped daemon's store");
        store
            .change_topology(TopologyChange::PutBinding(BindingRecord {
                vhost: "/".into(),
                exchange: "t".into(),
                destination: "q".into(),
                destination_kind: DestinationKind::Queue,
                routing_key: THREE_HASHES.into(),
                arguments: FieldTable::new(),
            }))
            .await
            .expect("storing the binding");
        store.shutdown().await;
    }
    d.restart();
    let c = d.client().await;
    c.publish_and_confirm(OutgoingMessage::new("t", "a.b.c", "m"))
        .await
        .unwrap();
    assert_eq!(ready(&c, "q").await, 1, "the stored binding routes");
    assert!(
        d.logs()
            .contains("stored topic binding key has more than 2 '#' words"),
        "{}",
        d.logs()
    );
    c.unbind("q", "t", THREE_HASHES, FieldTable::new())
        .await
        .unwrap();
    c.publish_and_confirm(OutgoingMessage::new("t", "a.b.c", "m"))
        .await
        .unwrap();
    assert_eq!(
        ready(&c, "q").await,
        1,
        "unbound: the second message went nowhere"
    );
}
