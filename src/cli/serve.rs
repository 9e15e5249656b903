//! `warren serve`: the daemon's command-line arguments. Running the daemon lives with the
//! server; this file only declares what it accepts.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use warren_protocol::DEFAULT_MAX_FRAME_SIZE_BYTES;

use crate::daemon::TlsListen;
use crate::tls::ServerTlsFiles;

/// Where the AMQP over TLS listener is when a certificate is given and
/// `--amqp-tls-listen` is not: RabbitMQ's `amqps` port, on loopback like the AMQP default.
pub const DEFAULT_AMQP_TLS_LISTEN: &str = "127.0.0.1:5671";

/// Arguments of `warren serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the plain (non-TLS) listener (`127.0.0.1:0` picks a free port); `none`
    /// turns it off, for a server that takes only TLS clients (needs --tls-listen).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:5680",
        env = "WARREN_LISTEN"
    )]
    pub listen: String,

    /// Address of the TLS listener (default: none; `127.0.0.1:0` picks a free port, recorded
    /// in `runtime.json` as `tls_listen`). Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR", env = "WARREN_TLS_LISTEN")]
    pub tls_listen: Option<String>,

    /// Address of the AMQP 0-9-1 listener, for RabbitMQ clients (docs/amqp.md);
    /// `127.0.0.1:0` picks a free port, recorded in `runtime.json` as `amqp_listen`; `none`
    /// turns it off.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:5672",
        env = "WARREN_AMQP_LISTEN"
    )]
    pub amqp_listen: String,

    /// Address of the AMQP 0-9-1 over TLS listener (`amqps://`, docs/amqp.md); `none` turns
    /// it off. Default: `127.0.0.1:5671` (RabbitMQ's port) when --tls-cert and --tls-key are
    /// given, else off. Uses the TLS listener's certificate, key and client CA.
    #[arg(long, value_name = "ADDR", env = "WARREN_AMQP_TLS_LISTEN")]
    pub amqp_tls_listen: Option<String>,

    /// The TLS listener's certificate chain, PEM, server certificate first.
    #[arg(long, value_name = "FILE", env = "WARREN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "WARREN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require TLS clients to present a certificate signed by a CA in this PEM file.
    #[arg(long, value_name = "FILE", env = "WARREN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Directory holding the store and `runtime.json`.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./warren-data",
        env = "WARREN_DATA_DIR"
    )]
    pub data_dir: PathBuf,

    /// Heartbeat interval offered to clients, in seconds (0 turns heartbeats off).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        env = "WARREN_HEARTBEAT_SECS"
    )]
    pub heartbeat_secs: u32,

    /// Largest frame either side may send, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_SIZE_BYTES)]
    pub max_frame_size: u32,

    /// Seconds a frame that has started arriving may take to arrive whole; a client that
    /// sends part of a frame and stalls is closed with FRAME_ERROR after this, heartbeats or
    /// not (0 turns the limit off).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "WARREN_FRAME_TIMEOUT_SECS"
    )]
    pub frame_timeout_secs: u32,

    /// Largest encoded message properties, headers included, a publish may carry, in bytes;
    /// larger ones are refused with CONTENT_TOO_LARGE. The default, 128 KiB, is RabbitMQ's
    /// practical limit (its content header must fit in one default-sized frame).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::connection::DEFAULT_MAX_HEADER_BYTES,
        env = "WARREN_MAX_HEADER_BYTES"
    )]
    pub max_header_bytes: u32,

    /// Seconds the server may fail to write a single byte to a client before it closes the
    /// connection (requeueing its unacked messages). Default: two heartbeat intervals, or 60
    /// with heartbeats off; 0 turns the limit off.
    #[arg(long, value_name = "SECS", env = "WARREN_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u32>,

    /// Seconds a client connection may be silent before the kernel starts TCP keepalive
    /// probes (every 10 s, 3 of them): a peer that vanished without closing (a crashed host,
    /// a pulled cable) is then found and its connection closed, even with heartbeats off and
    /// nothing to write (0 turns keepalive off).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "WARREN_TCP_KEEPALIVE_SECS"
    )]
    pub tcp_keepalive_secs: u32,

    /// Bytes of ready message bodies each queue keeps in memory; stored messages past this
    /// are paged out and read back when due.
    #[arg(long, value_name = "BYTES", default_value_t = crate::broker::DEFAULT_QUEUE_WINDOW_BYTES)]
    pub queue_window_bytes: u64,

    /// How long a delivery may stay unacked before its consumer is cancelled and the message
    /// requeued, for queues without `x-consumer-timeout` (milliseconds; default: no limit).
    #[arg(long, value_name = "MS", env = "WARREN_CONSUMER_TIMEOUT_MS")]
    pub consumer_timeout_ms: Option<u64>,

    /// Address to serve Prometheus metrics on, at `GET /metrics` (default: off;
    /// `127.0.0.1:0` picks a free port, recorded in `runtime.json` as `metrics_listen`).
    #[arg(long, value_name = "ADDR", env = "WARREN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// Block persistent publishers while free space on the data directory's filesystem is
    /// below this (the disk alarm; RabbitMQ's `disk_free_limit`). Bytes, or with a unit:
    /// `50MB`, `2GiB`; `0` turns the alarm off.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "50MB",
        value_parser = parse_size,
        env = "WARREN_DISK_FREE_LIMIT"
    )]
    pub disk_free_limit: u64,

    /// The store's page cache (redb's): what it keeps of the file in memory, counted in the
    /// memory budget. Bytes, or with a unit (`64MiB`, `1GiB`). More helps consumers reading
    /// a backlog larger than the queues' in-memory windows; the kernel caches the file too.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "32MiB",
        value_parser = parse_size,
        env = "WARREN_STORE_CACHE_SIZE"
    )]
    pub store_cache_size: u64,

    /// Save the store's allocator state with every commit (the default), so that a restart
    /// after a crash (kill -9, power loss) opens the store at once instead of walking the
    /// whole file to rebuild it (seconds per GB). Costs every commit a second fsync and the
    /// state's pages (docs/storage.md, *Recovery*). Kept for scripts that pass it.
    #[arg(long, overrides_with = "no_store_quick_repair")]
    pub store_quick_repair: bool,

    /// Commit without saving the allocator state: commits are cheaper (about 10% more
    /// publishes per second into a backlog no consumer takes), and a restart after a crash
    /// walks the whole store file first (about 2.5 s per GB).
    #[arg(
        long,
        env = "WARREN_NO_STORE_QUICK_REPAIR",
        overrides_with = "store_quick_repair"
    )]
    pub no_store_quick_repair: bool,

    /// The memory budget: above this much allocated memory, every publisher is blocked until
    /// consumers drain (the memory alarm; RabbitMQ's `vm_memory_high_watermark`). A size
    /// (`2GiB`) or a share of the machine's (or container's) memory (`60%`); `0` turns the
    /// alarm off.
    #[arg(
        long,
        value_name = "SIZE|PERCENT",
        default_value = "60%",
        value_parser = parse_memory_limit,
        env = "WARREN_MEMORY_LIMIT"
    )]
    pub memory_limit: MemoryLimit,

    /// Most queues, in all virtual hosts together; declaring one more is refused.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_queues: usize,

    /// Most exchanges clients may declare, in all virtual hosts together (the built-in
    /// ones not counted); declaring one more is refused.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_exchanges: usize,

    /// Connections served at once, over all listeners; past this the server stops accepting
    /// and new clients wait in the kernel's backlog until one closes. `0`: no cap of the
    /// server's own (the process's file-descriptor limit still bounds it).
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS,
        env = "WARREN_MAX_CONNECTIONS"
    )]
    pub max_connections: usize,

    /// Most consumers on one connection; one more is refused.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_consumers_per_connection: usize,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Messages read per batch when recovered queues are loaded in the background after a
    /// start (before serving, each queue's first batch, at most 1,024). For tests and tuning.
    #[arg(long, value_name = "N", default_value_t = crate::broker::DEFAULT_RECOVERY_BATCH,
        value_parser = clap::value_parser!(u32).range(1..), hide = true)]
    pub recovery_batch: u32,

    /// For tests: while this file exists, the background loading of recovered queues waits
    /// before each batch (queues stay recovering until it is removed).
    #[arg(long, value_name = "FILE", hide = true)]
    pub recovery_hold: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// The plain listener's address, `None` for `--listen none`.
    pub fn plain_listen(&self) -> Option<String> {
        let listen = self.listen.trim();
        (!listen.eq_ignore_ascii_case("none")).then(|| listen.to_owned())
    }

    /// The AMQP listener's address, `None` for `--amqp-listen none` (or empty).
    pub fn amqp_listen(&self) -> Option<String> {
        let listen = self.amqp_listen.trim();
        (!listen.is_empty() && !listen.eq_ignore_ascii_case("none")).then(|| listen.to_owned())
    }

    /// The TLS listener asked for, if any.
    ///
    /// # Errors
    /// --tls-listen without --tls-cert or --tls-key, or a TLS file that no TLS listener
    /// (this one or the AMQP one) uses, which would otherwise be ignored without a word.
    pub fn tls(&self) -> anyhow::Result<Option<TlsListen>> {
        let Some(listen) = self.tls_listen.clone().filter(|l| !l.trim().is_empty()) else {
            if self.amqp_tls()?.is_none() {
                let stray = [
                    ("--tls-cert", self.tls_cert.is_some()),
                    ("--tls-key", self.tls_key.is_some()),
                    ("--tls-client-ca", self.tls_client_ca.is_some()),
                ];
                if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                    anyhow::bail!(
                        "{flag} is set but neither --tls-listen nor --amqp-tls-listen is: it \
                         would have no effect"
                    );
                }
            }
            return Ok(None);
        };
        let Some(files) = self.tls_files() else {
            anyhow::bail!("--tls-listen needs --tls-cert FILE and --tls-key FILE");
        };
        Ok(Some(TlsListen { listen, files }))
    }

    /// The AMQP over TLS listener asked for, if any: `--amqp-tls-listen`, or by default
    /// `127.0.0.1:5671` when a certificate and key are given (as the AMQP listener is on by
    /// default on loopback; a RabbitMQ user with a certificate expects `amqps://` on 5671).
    ///
    /// # Errors
    /// --amqp-tls-listen ADDR without --tls-cert or --tls-key.
    pub fn amqp_tls(&self) -> anyhow::Result<Option<TlsListen>> {
        let files = self.tls_files();
        let listen = match self.amqp_tls_listen.as_deref().map(str::trim) {
            Some(l) if l.is_empty() || l.eq_ignore_ascii_case("none") => return Ok(None),
            Some(l) => l.to_owned(),
            None if files.is_some() => DEFAULT_AMQP_TLS_LISTEN.to_owned(),
            None => return Ok(None),
        };
        let Some(files) = files else {
            anyhow::bail!("--amqp-tls-listen needs --tls-cert FILE and --tls-key FILE");
        };
        Ok(Some(TlsListen { listen, files }))
    }

    /// The certificate, key and client CA, when both a certificate and a key are given.
    fn tls_files(&self) -> Option<ServerTlsFiles> {
        Some(ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--memory-limit`: bytes, or a share of the memory available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// This many bytes (0: no memory alarm).
    Bytes(u64),
    /// This share (0 to 1) of the machine's or container's memory.
    Share(f64),
}

impl MemoryLimit {
    /// The limit in bytes, given the memory available (`None`: unknown; a share then falls
    /// back to 4 GiB's worth, so the alarm stays on guard).
    pub fn bytes(self, available: Option<u64>) -> u64 {
        match self {
            MemoryLimit::Bytes(b) => b,
            // f64 holds every byte count below 2^53 exactly; a share of it needs no more.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            MemoryLimit::Share(share) => (available.unwrap_or(4 << 30) as f64 * share) as u64,
        }
    }
}

/// Parses `--memory-limit`: `60%` (a share of memory) or a size ([`parse_size`]).
///
/// # Errors
/// A percentage outside 1–100, or not a size.
pub fn parse_memory_limit(text: &str) -> Result<MemoryLimit, String> {
    match text.trim().strip_suffix('%') {
        Some(pct) => match pct.trim().parse::<f64>() {
            Ok(p) if (1.0..=100.0).contains(&p) => Ok(MemoryLimit::Share(p / 100.0)),
            _ => Err(format!(
                "'{text}' is not a share of memory: expected 1% to 100%, e.g. 60%"
            )),
        },
        None => parse_size(text).map(MemoryLimit::Bytes),
    }
}

/// Parses a size in bytes: a number, optionally followed by a unit (`kB`, `MB`, `GB`, `TB`
/// in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of 1024; case does not matter).
///
/// # Errors
/// Not a number, an unknown unit, or more than `u64::MAX` bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: expected a number of bytes, e.g. 50MB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is more bytes than fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{parse_memory_limit, parse_size, MemoryLimit};
    use crate::cli::{Cli, Command};
    #[test]
    fn memory_limits_are_sizes_or_shares() {
        assert_eq!(parse_memory_limit("60%"), Ok(MemoryLimit::Share(0.6)));
        assert_eq!(parse_memory_limit("2GiB"), Ok(MemoryLimit::Bytes(2 << 30)));
        assert_eq!(parse_memory_limit("0"), Ok(MemoryLimit::Bytes(0)));
        assert!(parse_memory_limit("0%").is_err());
        assert!(parse_memory_limit("150%").is_err());
        assert_eq!(MemoryLimit::Share(0.5).bytes(Some(1000)), 500);
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512 kb"), Ok(512_000));
        assert!(parse_size("50XB")
            .unwrap_err()
            .contains("unknown unit 'xb'"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999TB").is_err());
    }

    fn serve_args(argv: &[&str]) -> super::ServeArgs {
        let argv = [&["warren", "serve"][..], argv].concat();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(args) => args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn listen_none_turns_the_plain_listener_off() {
        assert_eq!(serve_args(&["--listen", "none"]).plain_listen(), None);
        assert_eq!(serve_args(&["--listen", "NONE"]).plain_listen(), None);
        assert_eq!(
            serve_args(&["--listen", "127.0.0.1:0"]).plain_listen(),
            Some("127.0.0.1:0".to_owned())
        );
    }

    #[test]
    fn the_amqp_listener_is_on_by_default_on_loopback_and_none_turns_it_off() {
        assert_eq!(
            serve_args(&[]).amqp_listen().as_deref(),
            Some("127.0.0.1:5672")
        );
        assert_eq!(serve_args(&["--amqp-listen", "none"]).amqp_listen(), None);
        assert_eq!(
            serve_args(&["--amqp-listen", "127.0.0.1:0"])
                .amqp_listen()
                .as_deref(),
            Some("127.0.0.1:0")
        );
    }

    #[test]
    fn tls_files_without_a_tls_listener_are_refused_not_ignored() {
        let err = serve_args(&["--tls-client-ca", "ca.pem"])
            .tls()
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--tls-client-ca is set but neither --tls-listen nor --amqp-tls-listen is: it \
             would have no effect"
        );
        let tls = serve_args(&[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .tls()
        .expect("valid")
        .expect("a TLS listener");
        assert_eq!(tls.listen, "127.0.0.1:0");
        assert_eq!(tls.files.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(tls.files.client_ca, None);
    }

    #[test]
    fn amqp_over_tls_is_on_on_loopback_5671_when_a_certificate_is_given() {
        let files = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        assert!(serve_args(&[]).amqp_tls().expect("valid").is_none());
        let amqps = serve_args(&files)
            .amqp_tls()
            .expect("valid")
            .expect("on by default with a certificate");
        assert_eq!(amqps.listen, "127.0.0.1:5671");
        assert_eq!(amqps.files.key, std::path::PathBuf::from("k.pem"));
        // The certificate serves AMQP alone: not a stray file.
        assert!(serve_args(&files).tls().expect("valid").is_none());
        let off = serve_args(&[&files[..], &["--amqp-tls-listen", "none"]].concat());
        assert!(off.amqp_tls().expect("valid").is_none());
        assert_eq!(
            off.tls().expect_err("nothing uses the files").to_string(),
            "--tls-cert is set but neither --tls-listen nor --amqp-tls-listen is: it would \
             have no effect"
        );
        let err = serve_args(&["--amqp-tls-listen", "127.0.0.1:0"])
            .amqp_tls()
            .expect_err("no certificate");
        assert_eq!(
            err.to_string(),
            "--amqp-tls-listen needs --tls-cert FILE and --tls-key FILE"
        );
    }
}
