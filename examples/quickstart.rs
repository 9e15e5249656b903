//! Publish a persistent message to a durable queue and consume it, with `warren::client`.
//! Run a daemon (`cargo run -- serve`), then `cargo run --example quickstart`.
use warren::client::{Client, ClientError, ConsumeOptions, OutgoingMessage, QueueOptions};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let client = Client::connect("127.0.0.1:5680").await?;
    let durable = QueueOptions {
        durable: true,
        ..Default::default()
    };
    client.declare_queue("jobs", durable).await?;

    // Returns once the broker has stored the message (a publisher confirm).
    let message = OutgoingMessage::new("", "jobs", "hello").persistent();
    let outcome = client.publish_and_confirm(message).await?;
    assert!(outcome.is_confirmed());

    let mut consumer = client.consume("jobs", ConsumeOptions::default()).await?;
    if let Some(delivery) = consumer.next().await {
        println!("received {:?}", delivery.body);
        client.ack(delivery.delivery_tag, false).await?;
    }
    client.close().await
}
