//! Opens N connections to a daemon and holds them, to measure what a connection costs the
//! daemon (docs/BENCHMARKS.md, "memory per connection"). Each connection either stays idle
//! or declares its own durable queue and consumes from it (prefetch 1,000, as `warren bench`
//! does). Prints `ready` once all are open, then holds them until stdin closes.
//!
//! `cargo run --release --example hold_connections -- ADDR N [idle|consume]`

use futures::stream::{StreamExt, TryStreamExt};
use warren::client::{Client, ConsumeOptions, QueueOptions};

/// Connections opened at once (each login verifies a password hash on the server).
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5680".into());
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let consume = args.next().as_deref() == Some("consume");
    let prefix = format!("hold-{}", std::process::id());
    let open = |i: usize| {
        let addr = addr.clone();
        let queue = format!("{prefix}-{i}");
        async move {
            let client = Client::connect(&addr).await?;
            let consumer = if consume {
                let durable = QueueOptions {
                    durable: true,
                    ..QueueOptions::default()
                };
                client.declare_queue(&queue, durable).await?;
                client.qos(1000).await?;
                Some(client.consume(&queue, ConsumeOptions::default()).await?)
            } else {
                None
            };
            Ok::<_, anyhow::Error>((client, consumer))
        }
    };
    let held: Vec<_> = futures::stream::iter(0..n)
        .map(open)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    println!("ready {}", held.len());
    let _ = tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest)
    })
    .await;
    if consume {
        if let Some((control, _)) = held.first() {
            for i in 0..n {
                let _ = control
                    .delete_queue(&format!("{prefix}-{i}"), false, false)
                    .await;
            }
        }
    }
    Ok(())
}
