//! The accept loop: one task per connection, a cap on connections, and graceful shutdown with
//! a `CancellationToken` and a `TaskTracker`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::connection::{self, ConnectionConfig};

/// Connections served at once; past this the listener stops accepting and new clients wait in
/// the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How long shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves clients on `listener` until `shutdown` resolves, then closes every connection
/// (each requeues its unacked deliveries) and drains the store.
pub async fn run(
    listener: TcpListener,
    broker: Broker,
    config: ConnectionConfig,
    shutdown: impl Future<Output = ()>,
) {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, _)) => {
                backoff = Duration::from_millis(10);
                let broker = broker.clone();
                let config = config.clone();
                let token = token.child_token();
                tracker.spawn(async move {
                    connection::run(socket, broker, config, token).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: wait and retry rather than spin or die.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::info!("shutting down: closing connections");
    token.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the drain timeout"
        );
    }
    broker.shutdown().await;
    tracing::info!("shutdown complete");
}
