//! What a run declares: one exchange of the chosen type and K queues bound to it, all
//! named after the run (`bench-<µs>-…`) so that runs never share anything, and deleted
//! afterwards. Also the routing keys each producer uses, and what routing means for the
//! verifier.

use anyhow::Context;
use warren_protocol::{ExchangeKind, FieldTable, FieldValue};

use super::options::ExchangeType;
use super::verify::Routing;
use crate::client::{Client, ExchangeOptions, QueueOptions};

/// Topic patterns, one per queue in turn; each matches every key of [`Topology::keys`].
const TOPIC_PATTERNS: [&str; 4] = ["bench.#", "bench.*.*", "*.*.*", "#"];

/// The run's exchange and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The exchange producers publish to (`""` for the default exchange).
    pub exchange: String,
    /// Its type.
    pub kind: ExchangeType,
    /// The queues, in index order.
    pub queues: Vec<String>,
}

impl Topology {
    /// Names for a run with `queues` queues, unique by the `prefix` (the run's start time).
    pub fn new(prefix: &str, kind: ExchangeType, queues: usize) -> Topology {
        let queues = if queues == 1 {
            // The single queue keeps the name bench always gave it (docs, permissions).
            vec![prefix.to_owned()]
        } else {
            (0..queues).map(|i| format!("{prefix}-q{i}")).collect()
        };
        let exchange = match kind {
            ExchangeType::Default => String::new(),
            _ => format!("{prefix}-x"),
        };
        Topology {
            exchange,
            kind,
            queues,
        }
    }

    /// How routing spreads messages over the queues.
    pub fn routing(&self) -> Routing {
        match self.kind {
            ExchangeType::Default | ExchangeType::Direct => Routing::RoundRobin,
            ExchangeType::Fanout | ExchangeType::Topic => Routing::All,
        }
    }

    /// The routing keys producer `p` cycles through: key `(seq + p) % K` for message `seq`.
    /// Direct and default: the queue names. Fanout: one empty key. Topic:
    /// `bench.p<p>.k<i>`, which every queue's pattern matches.
    pub fn keys(&self, producer: u32) -> Vec<String> {
        match self.kind {
            ExchangeType::Default | ExchangeType::Direct => self.queues.clone(),
            ExchangeType::Fanout => vec![String::new()],
            ExchangeType::Topic => (0..self.queues.len())
                .map(|i| format!("bench.p{producer}.k{i}"))
                .collect(),
        }
    }

    /// Declares the exchange, the queues (durable when `durable`; streams when `stream`)
    /// and the bindings.
    ///
    /// # Errors
    /// The server refused a declaration.
    pub async fn declare(
        &self,
        client: &Client,
        durable: bool,
        stream: bool,
    ) -> anyhow::Result<()> {
        let kind = match self.kind {
            ExchangeType::Default => None,
            ExchangeType::Direct => Some(ExchangeKind::Direct),
            ExchangeType::Fanout => Some(ExchangeKind::Fanout),
            ExchangeType::Topic => Some(ExchangeKind::Topic),
        };
        if let Some(kind) = kind {
            client
                .declare_exchange(
                    &self.exchange,
                    kind,
                    ExchangeOptions {
                        durable,
                        ..Default::default()
                    },
                )
                .await
                .with_context(|| format!("declaring exchange '{}'", self.exchange))?;
        }
        for (i, q) in self.queues.iter().enumerate() {
            let mut arguments = FieldTable::new();
            if stream {
                arguments.insert(
                    "x-queue-type".to_owned(),
                    FieldValue::String("stream".to_owned()),
                );
            }
            client
                .declare_queue(
                    q,
                    QueueOptions {
                        // A stream is always durable, and stores every message routed to it.
                        durable: durable || stream,
                        arguments,
                        ..Default::default()
                    },
                )
                .await
                .with_context(|| format!("declaring queue '{q}'"))?;
            let key = match self.kind {
                ExchangeType::Default => continue,
                ExchangeType::Direct => q.as_str(),
                ExchangeType::Fanout => "",
                ExchangeType::Topic => TOPIC_PATTERNS[i % TOPIC_PATTERNS.len()],
            };
            client
                .bind(q, &self.exchange, key, FieldTable::new())
                .await
                .with_context(|| format!("binding queue '{q}' to '{}'", self.exchange))?;
        }
        Ok(())
    }

    /// Deletes what [`Topology::declare`] made; best effort (the run's result matters more
    /// than a failed clean-up, which is logged).
    pub async fn delete(&self, client: &Client) {
        for q in &self.queues {
            if let Err(e) = client.delete_queue(q, false, false).await {
                tracing::warn!("bench: deleting queue '{q}': {e}");
            }
        }
        if !self.exchange.is_empty() {
            if let Err(e) = client.delete_exchange(&self.exchange, false).await {
                tracing::warn!("bench: deleting exchange '{}': {e}", self.exchange);
            }
        }
    }
}
