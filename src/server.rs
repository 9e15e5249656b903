//! The accept loop: one task per connection, a cap on connections, and graceful shutdown with
//! a `Stop` and a `TaskTracker`. It serves a plain listener, a TLS listener, an
//! AMQP 0-9-1 listener and an AMQP over TLS one, each when asked for, side by side; the cap, the connection
//! settings and the shutdown cover them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::amqp;
use crate::broker::Broker;
use crate::connection::{self, ConnectionConfig};
use crate::stop::Stop;

/// Default `--max-connections`: connections served at once, past which the listener stops
/// accepting and new clients wait in the kernel's backlog. RabbitMQ has no cap of its own
/// (`connection_max` is `infinity`) and is bounded by its file-descriptor limit, which its
/// packages set to 65,536; this is the same number (docs/decisions.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// How long shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listeners a server accepts on; at least one should be set, or nobody can connect.
#[derive(Default)]
pub struct Listeners {
    /// Plain TCP (`--listen`).
    pub plain: Option<TcpListener>,
    /// TLS (`--tls-listen`), with the acceptor holding the server's certificate.
    pub tls: Option<(TcpListener, TlsAcceptor)>,
    /// AMQP 0-9-1 (`--amqp-listen`).
    pub amqp: Option<TcpListener>,
    /// AMQP 0-9-1 over TLS (`--amqp-tls-listen`), with the acceptor.
    pub amqp_tls: Option<(TcpListener, TlsAcceptor)>,
}

impl From<TcpListener> for Listeners {
    fn from(plain: TcpListener) -> Self {
        Listeners {
            plain: Some(plain),
            tls: None,
            amqp: None,
            amqp_tls: None,
        }
    }
}

/// Which listener a client came through, and so which protocol it speaks.
enum Door {
    Plain,
    Tls(TlsAcceptor),
    Amqp,
    AmqpTls(TlsAcceptor),
}

/// Accepts on `listener`, or never when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(socket, _)| socket),
        None => std::future::pending().await,
    }
}

/// Serves clients on `listeners` until `shutdown` resolves, then closes every connection
/// (each requeues its unacked deliveries) and drains the store.
pub async fn run(
    listeners: impl Into<Listeners>,
    broker: Broker,
    config: ConnectionConfig,
    shutdown: impl Future<Output = ()>,
) {
    let token = Stop::new();
    let tracker = TaskTracker::new();
    // 0: no cap of our own (the descriptor limit still applies: accept fails and is retried).
    let cap = match config.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n.min(Semaphore::MAX_PERMITS),
    };
    let limit = Arc::new(Semaphore::new(cap));
    let config = Arc::new(config);
    let listeners = listeners.into();
    let tls_listener = listeners.tls.as_ref().map(|(l, _)| l);
    let amqp_tls_listener = listeners.amqp_tls.as_ref().map(|(l, _)| l);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = accept(listeners.plain.as_ref()) => a.map(|s| (s, Door::Plain)),
            a = accept(tls_listener) => a.and_then(|s| match &listeners.tls {
                Some((_, acceptor)) => Ok((s, Door::Tls(acceptor.clone()))),
                None => Err(std::io::ErrorKind::NotConnected.into()),
            }),
            a = accept(listeners.amqp.as_ref()) => a.map(|s| (s, Door::Amqp)),
            a = accept(amqp_tls_listener) => a.and_then(|s| match &listeners.amqp_tls {
                Some((_, acceptor)) => Ok((s, Door::AmqpTls(acceptor.clone()))),
                None => Err(std::io::ErrorKind::NotConnected.into()),
            }),
        };
        match accepted {
            Ok((socket, door)) => {
                backoff = Duration::from_millis(10);
                if let Err(e) = connection::set_tcp_keepalive(&socket, config.tcp_keepalive) {
                    // Served anyway: heartbeats and the write timeout still apply.
                    tracing::warn!(error = %e, "setting TCP keepalive on a client socket failed");
                }
                let broker = broker.clone();
                let config = config.clone();
                let token = token.child();
                // One task per kind of client rather than one `match` in a shared task: a
                // task is as large as its future, and a shared one would make every plain
                // connection as large as an AMQP one (12 KB each instead of 4.5 KB).
                // The TLS handshake runs in the connection's task, so a slow client cannot
                // hold up the accept loop.
                match door {
                    Door::Plain => tracker.spawn(async move {
                        connection::run(socket, broker, config, token).await;
                        drop(permit);
                    }),
                    Door::Tls(acceptor) => tracker.spawn(async move {
                        connection::run_tls(socket, acceptor, broker, config, token).await;
                        drop(permit);
                    }),
                    Door::Amqp => tracker.spawn(async move {
                        amqp::run(socket, broker, config, token).await;
                        drop(permit);
                    }),
                    Door::AmqpTls(acceptor) => tracker.spawn(async move {
                        amqp::run_tls(socket, acceptor, broker, config, token).await;
                        drop(permit);
                    }),
                };
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
