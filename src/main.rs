//! The `warren` binary: `warren serve` runs the daemon; every other command is a client.
//! Errors end here as one line on stderr and a non-zero exit.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren::cli::get::{QueueEmpty, EXIT_EMPTY};
use warren::cli::serve::{LogFormat, ServeArgs};
use warren::cli::{run_client_command, Cli, Command};
use warren::daemon::{serve, ServeOptions};

/// Counts every allocation, for the memory budget (`--memory-limit`): the bytes the daemon
/// holds. jemalloc beneath it, because it gives freed pages back to the system (after
/// `dirty_decay_ms`, see .cargo/config.toml) where glibc's malloc kept a drained backlog's.
#[global_allocator]
static ALLOCATOR: cap::Cap<tikv_jemallocator::Jemalloc> =
    cap::Cap::new(tikv_jemallocator::Jemalloc, usize::MAX);

fn allocated_bytes() -> u64 {
    u64::try_from(ALLOCATOR.allocated()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            // `--server` is global for the client commands, so clap accepts it here too;
            // the daemon listens on --listen, and silently ignoring it would mislead.
            Command::Serve(_) if cli.global.server.is_some() => Err(anyhow::anyhow!(
                "`warren serve` takes --listen ADDR, not --server (which client commands use)"
            )),
            Command::Serve(_) if cli.global.tls => Err(anyhow::anyhow!(
                "`warren serve` takes --tls-listen ADDR with --tls-cert and --tls-key, not \
                 --tls (which client commands use)"
            )),
            Command::Serve(args) => run_daemon(args).await,
            other => run_client_command(other, &cli.global).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Not a failure, but a script must be able to tell: its own status, and one line
        // for a person unless --quiet.
        Err(err) if err.is::<QueueEmpty>() => {
            if !cli.global.quiet {
                eprintln!("{err}");
            }
            ExitCode::from(EXIT_EMPTY)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let heartbeat =
        (args.heartbeat_secs > 0).then(|| Duration::from_secs(u64::from(args.heartbeat_secs)));
    let secs = |s: u32| (s > 0).then(|| Duration::from_secs(u64::from(s)));
    serve(ServeOptions {
        listen: args.plain_listen(),
        tls: args.tls()?,
        amqp_listen: args.amqp_listen(),
        amqp_tls: args.amqp_tls()?,
        data_dir: args.data_dir,
        heartbeat,
        max_frame_size: args.max_frame_size,
        frame_timeout: secs(args.frame_timeout_secs),
        max_header_bytes: args.max_header_bytes,
        write_timeout: match args.write_timeout_secs {
            Some(s) => secs(s),
            None => Some(warren::connection::default_write_timeout(heartbeat)),
        },
        tcp_keepalive: secs(args.tcp_keepalive_secs),
        max_connections: args.max_connections,
        queue_window_bytes: args.queue_window_bytes,
        consumer_timeout: args
            .consumer_timeout_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        // An empty WARREN_METRICS_LISTEN means off, like leaving it unset.
        metrics_listen: args.metrics_listen.filter(|a| !a.trim().is_empty()),
        disk_free_limit: args.disk_free_limit,
        store_cache_bytes: usize::try_from(args.store_cache_size).unwrap_or(usize::MAX),
        store_quick_repair: !args.no_store_quick_repair,
        recovery_batch: args.recovery_batch as usize,
        recovery_hold: args.recovery_hold.clone(),
        memory_limit: args.memory_limit,
        limits: warren::broker::Limits {
            max_queues: args.max_queues,
            max_exchanges: args.max_exchanges,
            max_consumers_per_connection: args.max_consumers_per_connection,
        },
        memory_gauge: Some(allocated_bytes),
    })
    .await
}
