//! `warren serve`: opens the store, binds the listeners (plain, TLS, AMQP, metrics: each when
//! asked for), announces the bound addresses in `<data-dir>/runtime.json`, and serves until SIGINT
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerConfig};
use crate::connection::ConnectionConfig;
use crate::error::BrokerError;
use crate::server::Listeners;
use crate::store::StoreError;
use crate::tls::ServerTlsFiles;

/// The file, in the data directory, where a running daemon records its address and pid.
pub const RUNTIME_FILE_NAME: &str = "runtime.json";

/// What `warren serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address of the plain (non-TLS) listener (`127.0.0.1:0` picks a free port; see
    /// `runtime.json`); `None` turns it off, which needs a TLS listener.
    pub listen: Option<String>,
    /// The TLS listener, if any.
    pub tls: Option<TlsListen>,
    /// Address of the AMQP 0-9-1 listener (`127.0.0.1:0` picks a free port, recorded in
    /// `runtime.json` as `amqp_listen`); `None` turns it off.
    pub amqp_listen: Option<String>,
    /// The AMQP 0-9-1 over TLS listener (`amqps`), if any: the same certificate and key as
    /// the TLS listener's, recorded in `runtime.json` as `amqp_tls_listen`.
    pub amqp_tls: Option<TlsListen>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Heartbeat interval; `None` turns heartbeats off.
    pub heartbeat: Option<Duration>,
    /// Largest frame accepted from clients.
    pub max_frame_size: u32,
    /// How long a frame that has started arriving may take to arrive whole; `None` = no limit.
    pub frame_timeout: Option<Duration>,
    /// Largest encoded properties (headers included) a publish may carry.
    pub max_header_bytes: u32,
    /// How long the server may fail to write a byte to a client; `None` = no limit.
    pub write_timeout: Option<Duration>,
    /// Idle time before TCP keepalive probes a silent client; `None` = keepalive off.
    pub tcp_keepalive: Option<Duration>,
    /// Connections served at once; 0 = no cap of the server's own.
    pub max_connections: usize,
    /// Bytes of ready bodies each queue keeps in memory.
    pub queue_window_bytes: u64,
    /// Default consumer timeout for queues without `x-consumer-timeout`.
    pub consumer_timeout: Option<Duration>,
    /// Address to serve Prometheus metrics on (`GET /metrics`); `None` = no metrics listener.
    pub metrics_listen: Option<String>,
    /// Free bytes on the data directory's filesystem below which persistent publishers are
    /// blocked; 0 turns the disk alarm off.
    pub disk_free_limit: u64,
    /// Caps on what clients may create.
    pub limits: crate::broker::Limits,
    /// redb's page cache cap, bytes.
    pub store_cache_bytes: usize,
    /// Every commit saves redb's allocator state, so a restart after a crash skips the
    /// repair walk over the whole store file.
    pub store_quick_repair: bool,
    /// Entries read per batch when recovered queues load ([`crate::broker::RecoveryConfig`]).
    pub recovery_batch: usize,
    /// For tests: the background loading of recovered queues waits while this file exists.
    pub recovery_hold: Option<PathBuf>,
    /// The memory budget (0 turns the memory alarm off).
    pub memory_limit: crate::cli::serve::MemoryLimit,
    /// How the daemon reads the memory it holds: the binary's counting allocator. `None`
    /// (a daemon run from a library) has no memory alarm.
    pub memory_gauge: Option<crate::broker::memory_monitor::MemoryGauge>,
}

/// The TLS listener of `warren serve`.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// Address to listen on for TLS clients.
    pub listen: String,
    /// The certificate, key and (optionally) client CA.
    pub files: ServerTlsFiles,
}

/// What a running daemon writes to `runtime.json`, so tools and tests find it without racing
/// for a port.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RuntimeInfo {
    /// The address of its plain listener, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The address of its TLS listener, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    /// Its process id.
    pub pid: u32,
    /// The address it serves metrics on, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The address of its AMQP 0-9-1 listener, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_listen: Option<String>,
    /// The address of its AMQP over TLS listener, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_tls_listen: Option<String>,
}

/// Runs the daemon until a shutdown signal.
///
/// # Errors
/// No listener is asked for, a TLS file is unusable, the store cannot be opened, or an
/// address cannot be bound. (A runtime file that cannot be written is logged, not fatal.)
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    if opts.listen.is_none() && opts.tls.is_none() {
        anyhow::bail!(
            "no listener: --listen none turns the plain listener off, so --tls-listen ADDR \
             (with --tls-cert and --tls-key) is needed"
        );
    }
    // Before the store: a bad certificate path should not cost a store open (or a lock).
    // Both TLS listeners take their files from the same flags: one configuration serves both.
    let acceptor = match opts.tls.as_ref().or(opts.amqp_tls.as_ref()) {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &tls.files,
        )?)),
        None => None,
    };
    let runtime_file = opts.data_dir.join(RUNTIME_FILE_NAME);
    let broker = match Broker::open(BrokerConfig {
        data_dir: opts.data_dir.clone(),
        queue_window_bytes: opts.queue_window_bytes,
        consumer_timeout: opts.consumer_timeout,
        clock: std::sync::Arc::new(crate::clock::SystemClock),
        disk_free_limit: opts.disk_free_limit,
        limits: opts.limits,
        store_cache_bytes: opts.store_cache_bytes,
        store_quick_repair: opts.store_quick_repair,
        recovery: crate::broker::RecoveryConfig {
            batch: opts.recovery_batch,
            hold: opts.recovery_hold.clone(),
        },
    })
    .await
    {
        Ok(broker) => broker,
        Err(BrokerError::Store(StoreError::InUse { path })) => {
            anyhow::bail!("{}", in_use_message(&path, &runtime_file))
        }
        // Store errors name the data directory or file already: no context to add.
        Err(BrokerError::Store(e)) => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("opening the store in {}", opts.data_dir.display())))
        }
    };
    if let Some(gauge) = opts.memory_gauge {
        let available = crate::broker::memory_monitor::available_memory_bytes();
        let limit = opts.memory_limit.bytes(available);
        if limit > 0 {
            tracing::info!(limit, available, "memory budget");
            broker.start_memory_monitor(gauge, limit);
        }
    }
    let listener = match &opts.listen {
        Some(listen) => Some(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?,
        ),
        None => None,
    };
    let addr = listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("reading the bound address")?;
    let tls_listener = match (&opts.tls, &acceptor) {
        (Some(tls), Some(acceptor)) => Some((
            TcpListener::bind(&tls.listen)
                .await
                .with_context(|| format!("listening for TLS on {}", tls.listen))?,
            acceptor.clone(),
        )),
        _ => None,
    };
    let tls_addr = tls_listener
        .as_ref()
        .map(|(l, _)| l.local_addr())
        .transpose()
        .context("reading the bound TLS address")?;
    let amqp_listener = match &opts.amqp_listen {
        Some(listen) => Some(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening for AMQP on {listen}"))?,
        ),
        None => None,
    };
    let amqp_addr = amqp_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("reading the bound AMQP address")?;
    let amqp_tls_listener = match (&opts.amqp_tls, acceptor) {
        (Some(tls), Some(acceptor)) => Some((
            TcpListener::bind(&tls.listen)
                .await
                .with_context(|| format!("listening for AMQP over TLS on {}", tls.listen))?,
            acceptor,
        )),
        _ => None,
    };
    let amqp_tls_addr = amqp_tls_listener
        .as_ref()
        .map(|(l, _)| l.local_addr())
        .transpose()
        .context("reading the bound AMQP over TLS address")?;
    let metrics_listener = match &opts.metrics_listen {
        Some(metrics_listen) => Some(
            TcpListener::bind(metrics_listen)
                .await
                .with_context(|| format!("listening for metrics on {metrics_listen}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("reading the bound metrics address")?;
    // Not fatal: a daemon restarted on a full disk must still start, to serve the consumers
    // that will free it. Tools fall back to the addresses in the log line below.
    let bound = Bound {
        plain: addr,
        tls: tls_addr,
        amqp: amqp_addr,
        amqp_tls: amqp_tls_addr,
        metrics: metrics_addr,
    };
    if let Err(e) = write_runtime_file(&runtime_file, &bound) {
        tracing::error!(
            error = format!("{e:#}"),
            "cannot write runtime.json; serving without it"
        );
    }
    let mut listeners: Vec<String> = addr.iter().map(|a| format!("warren://{a}")).collect();
    // `warrens` as in `amqps`/`https`: the same protocol inside TLS.
    listeners.extend(tls_addr.iter().map(|a| format!("warrens://{a}")));
    listeners.extend(amqp_addr.iter().map(|a| format!("amqp://{a}")));
    listeners.extend(amqp_tls_addr.iter().map(|a| format!("amqps://{a}")));
    if let Some(m) = metrics_addr {
        listeners.push(format!("http://{m}{}", crate::metrics::METRICS_PATH));
    }
    broker.set_listeners(listeners);
    tracing::info!(
        listen = %display_addr(addr),
        tls_listen = %display_addr(tls_addr),
        amqp_listen = %display_addr(amqp_addr),
        amqp_tls_listen = %display_addr(amqp_tls_addr),
        data_dir = %opts.data_dir.display(),
        "warren is serving"
    );
    let config = ConnectionConfig {
        max_frame_size: opts.max_frame_size,
        heartbeat: opts.heartbeat,
        frame_timeout: opts.frame_timeout,
        max_header_bytes: opts.max_header_bytes,
        write_timeout: opts.write_timeout,
        tcp_keepalive: opts.tcp_keepalive,
        max_connections: opts.max_connections,
    };
    // The metrics endpoint stops when the signal arrives, while connections drain.
    let stop_metrics = CancellationToken::new();
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            l,
            broker.clone(),
            stop_metrics.clone(),
        ))
    });
    let shutdown = {
        let stop_metrics = stop_metrics.clone();
        async move {
            shutdown_signal().await;
            stop_metrics.cancel();
        }
    };
    let listeners = Listeners {
        plain: listener,
        tls: tls_listener,
        amqp: amqp_listener,
        amqp_tls: amqp_tls_listener,
    };
    crate::server::run(listeners, broker, config, shutdown).await;
    stop_metrics.cancel();
    if let Some(task) = metrics_task {
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "the metrics task failed");
        }
    }
    let _ = std::fs::remove_file(&runtime_file);
    Ok(())
}

/// Says who holds a data directory another daemon has open, from the `runtime.json` that
/// daemon wrote; without one (it is still starting, or not a daemon), says only that it is
/// in use.
fn in_use_message(data_dir: &Path, runtime_file: &Path) -> String {
    let holder = std::fs::read(runtime_file)
        .ok()
        .and_then(|raw| serde_json::from_slice::<RuntimeInfo>(&raw).ok());
    match holder {
        Some(info) => format!(
            "data directory {} is in use by warren pid {} listening on {}",
            data_dir.display(),
            info.pid,
            match (&info.listen, &info.tls_listen) {
                (Some(plain), Some(tls)) => format!("{plain} and {tls} (TLS)"),
                (Some(plain), None) => plain.clone(),
                (None, Some(tls)) => format!("{tls} (TLS)"),
                (None, None) => "nothing".to_owned(),
            }
        ),
        None => format!(
            "data directory {} is in use by another process (it has no {RUNTIME_FILE_NAME} \
             saying which)",
            data_dir.display()
        ),
    }
}

/// An address for the startup line, `off` for a listener that is not there.
fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// The addresses the daemon's listeners are bound to, for `runtime.json`.
struct Bound {
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    amqp: Option<SocketAddr>,
    amqp_tls: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

fn write_runtime_file(path: &Path, bound: &Bound) -> anyhow::Result<()> {
    let text = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    let info = RuntimeInfo {
        listen: text(bound.plain),
        tls_listen: text(bound.tls),
        pid: std::process::id(),
        metrics_listen: text(bound.metrics),
        amqp_listen: text(bound.amqp),
        amqp_tls_listen: text(bound.amqp_tls),
    };
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&info)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
