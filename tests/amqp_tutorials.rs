//! RabbitMQ's six tutorials (<https://www.rabbitmq.com/tutorials>), written as they are
//! written for lapin, run against Warren's AMQP listener: hello world, work queues, publish /
//! subscribe, routing, topics and RPC. Then dead-lettering as an AMQP client sees it.
//!
//! The tutorials publish without confirms. Where a test must show that a message did *not*
//! arrive, the publisher sends a last message that does arrive: a queue keeps the order of one
//! channel's publishes, so everything before it has been routed by then.

mod common;

use common::{within, TestDaemon};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    within("a delivery", c.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str, props: BasicProperties) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    )
    .await
    .expect("published");
}

async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("consuming")
}

/// Bodies of deliveries (no-ack consumer) up to and including `last`.
async fn until(c: &mut lapin::Consumer, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let d = next(c).await;
        let body = String::from_utf8(d.data).expect("utf8");
        let done = body == last;
        out.push(body);
        if done {
            return out;
        }
    }
    panic!("no '{last}' in 100 deliveries: {out:?}");
}

/// A server-named, exclusive queue, as the tutorials declare their subscriber queues.
async fn exclusive_queue(ch: &Channel) -> String {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declared");
    q.name().as_str().to_owned()
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange declared");
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bound");
}

#[tokio::test]
async fn tutorial_1_hello_world() {
    let d = TestDaemon::start();
    // receive.rs
    let recv = d.amqp().await;
    let rch = recv.create_channel().await.expect("channel");
    rch.queue_declare(
        "hello".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    let mut consumer = consume(&rch, "hello", true).await;
    // send.rs
    let send = d.amqp().await;
    let sch = send.create_channel().await.expect("channel");
    sch.queue_declare(
        "hello".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    publish(
        &sch,
        "",
        "hello",
        "Hello World!",
        BasicProperties::default(),
    )
    .await;
    send.close(0, "".into()).await.expect("closed");

    let got = next(&mut consumer).await;
    assert_eq!(got.data, b"Hello World!");
    assert_eq!(got.exchange.as_str(), "");
    assert_eq!(got.routing_key.as_str(), "hello");
}

#[tokio::test]
async fn tutorial_2_work_queues_with_acks_and_fair_dispatch() {
    let d = TestDaemon::start();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // Two workers (worker.rs), each with prefetch 1 and manual acks.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let conn = d.amqp().await;
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("task_queue".into(), durable, FieldTable::default())
            .await
            .expect("declared");
        ch.basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let consumer = consume(&ch, "task_queue", false).await;
        workers.push((conn, consumer));
    }
    // new_task.rs: persistent tasks.
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("task_queue".into(), durable, FieldTable::default())
        .await
        .expect("declared");
    for task in ["task 1.", "task 2..", "task 3...", "task 4"] {
        publish(
            &ch,
            "",
            "task_queue",
            task,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    }

    // Fair dispatch: each worker holds one unacked task, so each got a different one.
    let first = next(&mut workers[0].1).await;
    let second = next(&mut workers[1].1).await;
    assert_ne!(first.data, second.data);
    // Worker 0 dies holding its task: it goes to worker 1, marked redelivered.
    let dead_task = first.data.clone();
    let (dead_conn, dead_consumer) = workers.remove(0);
    drop(dead_consumer);
    dead_conn.close(0, "".into()).await.expect("closed");
    let mut done = vec![String::from_utf8(second.data.clone()).expect("utf8")];
    second.ack(BasicAckOptions::default()).await.expect("acked");
    let mut redelivered = Vec::new();
    for _ in 0..3 {
        let task = next(&mut workers[0].1).await;
        if task.redelivered {
            redelivered.push(task.data.clone());
        }
        done.push(String::from_utf8(task.data.clone()).expect("utf8"));
        task.ack(BasicAckOptions::default()).await.expect("acked");
    }
    done.sort();
    assert_eq!(done, ["task 1.", "task 2..", "task 3...", "task 4"]);
    assert_eq!(
        redelivered,
        [dead_task],
        "the dead worker's task, redelivered"
    );
}

#[tokio::test]
async fn tutorial_3_publish_subscribe_with_a_fanout_exchange() {
    let d = TestDaemon::start();
    // Two receive_logs.rs, each with its own exclusive server-named queue.
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let conn = d.amqp().await;
        let ch = conn.create_channel().await.expect("channel");
        exchange(&ch, "logs", ExchangeKind::Fanout).await;
        let queue = exclusive_queue(&ch).await;
        assert!(queue.starts_with("amq.gen-"), "{queue}");
        bind(&ch, &queue, "logs", "").await;
        let consumer = consume(&ch, &queue, true).await;
        subscribers.push((conn, consumer));
    }
    // emit_log.rs
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    exchange(&ch, "logs", ExchangeKind::Fanout).await;
    for line in ["info: Hello World!", "warning: disk"] {
        publish(&ch, "logs", "", line, BasicProperties::default()).await;
    }
    for (_, consumer) in &mut subscribers {
        assert_eq!(
            until(consumer, "warning: disk").await,
            ["info: Hello World!", "warning: disk"]
        );
    }
}

#[tokio::test]
async fn tutorial_4_routing_with_a_direct_exchange() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    exchange(&ch, "direct_logs", ExchangeKind::Direct).await;
    // receive_logs_direct.rs warning error  /  receive_logs_direct.rs info warning error
    let errors_only = exclusive_queue(&ch).await;
    for severity in ["warning", "error"] {
        bind(&ch, &errors_only, "direct_logs", severity).await;
    }
    let everything = exclusive_queue(&ch).await;
    for severity in ["info", "warning", "error"] {
        bind(&ch, &everything, "direct_logs", severity).await;
    }
    let mut a = consume(&ch, &errors_only, true).await;
    let mut b = consume(&ch, &everything, true).await;

    // emit_log_direct.rs
    let pch = d.amqp().await.create_channel().await.expect("channel");
    for (severity, text) in [
        ("info", "i1"),
        ("error", "e1"),
        ("debug", "d1"),
        ("warning", "w1"),
        ("info", "i2"),
        ("error", "end"),
    ] {
        publish(
            &pch,
            "direct_logs",
            severity,
            text,
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(until(&mut a, "end").await, ["e1", "w1", "end"]);
    assert_eq!(until(&mut b, "end").await, ["i1", "e1", "w1", "i2", "end"]);
}

#[tokio::test]
async fn tutorial_5_topics() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    exchange(&ch, "topic_logs", ExchangeKind::Topic).await;
    // The tutorial's Q1 ("*.orange.*") and Q2 ("*.*.rabbit", "lazy.#").
    let q1 = exclusive_queue(&ch).await;
    bind(&ch, &q1, "topic_logs", "*.orange.*").await;
    let q2 = exclusive_queue(&ch).await;
    bind(&ch, &q2, "topic_logs", "*.*.rabbit").await;
    bind(&ch, &q2, "topic_logs", "lazy.#").await;
    let mut c1 = consume(&ch, &q1, true).await;
    let mut c2 = consume(&ch, &q2, true).await;

    let pch = d.amqp().await.create_channel().await.expect("channel");
    for key in [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.new.rabbit",
        "lazy.orange.new.rabbit",
        "end.orange.rabbit",
    ] {
        publish(&pch, "topic_logs", key, key, BasicProperties::default()).await;
    }
    assert_eq!(
        until(&mut c1, "end.orange.rabbit").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "end.orange.rabbit"
        ]
    );
    assert_eq!(
        until(&mut c2, "end.orange.rabbit").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.new.rabbit",
            "end.orange.rabbit"
        ],
        "lazy.pink.rabbit matches both of Q2's bindings and arrives once"
    );
}

fn fib(n: u64) -> u64 {
    match n {
        0 => 0,
        1 => 1,
        n => fib(n - 1) + fib(n - 2),
    }
}

#[tokio::test]
async fn tutorial_6_rpc_with_reply_to_and_correlation_id() {
    let d = TestDaemon::start();
    // rpc_server.rs: prefetch 1, answers on reply_to with the request's correlation id.
    let server_conn = d.amqp().await;
    let sch = server_conn.create_channel().await.expect("channel");
    sch.queue_declare(
        "rpc_queue".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    sch.basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut requests = consume(&sch, "rpc_queue", false).await;
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let req = next(&mut requests).await;
            let n: u64 = std::str::from_utf8(&req.data)
                .expect("utf8")
                .parse()
                .expect("a number");
            let reply_to = req.properties.reply_to().clone().expect("reply_to");
            let corr = req
                .properties
                .correlation_id()
                .clone()
                .expect("correlation_id");
            sch.basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                fib(n).to_string().as_bytes(),
                BasicProperties::default().with_correlation_id(corr),
            )
            .await
            .expect("replied");
            req.ack(BasicAckOptions::default()).await.expect("acked");
        }
        server_conn
    });

    // rpc_client.rs: an exclusive callback queue, one correlation id per call.
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    let callback = exclusive_queue(&ch).await;
    let mut replies = consume(&ch, &callback, true).await;
    for (i, (n, want)) in [(30u64, "832040"), (10, "55"), (1, "1")]
        .into_iter()
        .enumerate()
    {
        let corr = format!("call-{i}");
        publish(
            &ch,
            "",
            "rpc_queue",
            &n.to_string(),
            BasicProperties::default()
                .with_reply_to(callback.as_str().into())
                .with_correlation_id(corr.as_str().into()),
        )
        .await;
        let reply = next(&mut replies).await;
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(corr.as_str())
        );
        assert_eq!(reply.data, want.as_bytes(), "fib({n})");
    }
    within("the RPC server", server)
        .await
        .expect("the server ran");
}

fn field<'a>(table: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    table
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v)
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_with_rabbitmqs_x_death_as_an_amqp_client_sees_it() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    exchange(&ch, "dlx", ExchangeKind::Fanout).await;
    ch.queue_declare(
        "dead".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    bind(&ch, "dead", "dlx", "").await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    ch.queue_declare("work".into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declared");
    publish(
        &ch,
        "",
        "work",
        "poison",
        BasicProperties::default().with_expiration("60000".into()),
    )
    .await;
    let mut work = consume(&ch, "work", false).await;
    next(&mut work)
        .await
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("rejected");

    let mut dead = consume(&ch, "dead", true).await;
    let got = next(&mut dead).await;
    assert_eq!(got.data, b"poison");
    assert_eq!(got.exchange.as_str(), "dlx");
    assert_eq!(got.routing_key.as_str(), "work", "its own routing key");
    assert_eq!(
        got.properties.expiration(),
        &None,
        "the expiration moves into x-death"
    );
    let headers = got.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = field(&headers, "x-death") else {
        panic!("x-death is an array: {headers:?}");
    };
    assert_eq!(deaths.as_slice().len(), 1);
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("an x-death entry is a table: {deaths:?}");
    };
    assert_eq!(text(field(death, "queue")).as_deref(), Some("work"));
    assert_eq!(text(field(death, "reason")).as_deref(), Some("rejected"));
    assert_eq!(text(field(death, "exchange")).as_deref(), Some(""));
    assert_eq!(
        text(field(death, "original-expiration")).as_deref(),
        Some("60000")
    );
    assert!(
        matches!(field(death, "count"), Some(AMQPValue::LongLongInt(1))),
        "count: {:?}",
        field(death, "count")
    );
    assert!(
        matches!(field(death, "time"), Some(AMQPValue::Timestamp(t)) if *t > 1_600_000_000),
        "time is an AMQP timestamp in seconds: {:?}",
        field(death, "time")
    );
    let Some(AMQPValue::FieldArray(keys)) = field(death, "routing-keys") else {
        panic!("routing-keys is an array: {death:?}");
    };
    assert_eq!(keys.as_slice().len(), 1);
    assert_eq!(text(keys.as_slice().first()).as_deref(), Some("work"));
    for (key, want) in [
        ("x-first-death-queue", "work"),
        ("x-first-death-reason", "rejected"),
        ("x-first-death-exchange", ""),
        ("x-last-death-queue", "work"),
        ("x-last-death-reason", "rejected"),
    ] {
        assert_eq!(
            text(field(&headers, key)).as_deref(),
            Some(want),
            "{key}: {headers:?}"
        );
    }
}
