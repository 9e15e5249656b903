//! The broker's ticker: every [`TICK`] it expires messages (wherever they are in their
//! queues), releases delayed requeues, deletes queues idle past their `x-expires`, and
//! cancels consumers that held a delivery past their consumer timeout (the rule is the
//! queue's: [`consumer_timeout`](super::queue::consumer_timeout) and
//! [`timed_out`](super::queue::timed_out) in `queue/settle.rs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::queue::Queue;
use super::vhost::VHost;
use super::{Broker, Inner};

/// How often timers are checked; expiry and delays are honoured within this (plus a commit).
pub const TICK: Duration = Duration::from_millis(100);

pub(super) async fn run(inner: Weak<Inner>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        Broker { inner }.tick().await;
    }
}

impl Broker {
    async fn tick(&self) {
        let now = self.now_ms();
        self.update_rates(now);
        let mut idle: Vec<(Arc<VHost>, Arc<Queue>)> = Vec::new();
        for vh in self.vhost_list() {
            for q in vh.queue_list() {
                if q.tick(now).idle_expired {
                    idle.push((vh.clone(), q));
                }
            }
        }
        if !idle.is_empty() {
            let _guard = self.inner.topology.lock().await;
            for (vh, q) in idle {
                // Re-checked under the lock: a consumer or a declare may have come meanwhile.
                if q.is_deleted() || !q.tick(self.now_ms()).idle_expired {
                    continue;
                }
                tracing::info!(queue = %q.name, "deleting a queue unused for its x-expires");
                if let Err(e) = self.remove_queue(&vh, &q).await {
                    tracing::warn!(queue = %q.name, error = %e, "deleting an expired queue failed");
                }
            }
        }
        let sessions = self.live_sessions();
        let default = self.inner.config.consumer_timeout;
        for s in sessions {
            for (consumer, tag, age) in s.timed_out_consumers(default, now) {
                self.inner
                    .stats
                    .consumer_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "consumer timeout: delivery {tag} was not acknowledged within {} ms; its unacked messages were requeued",
                    age.as_millis()
                );
                self.cancel_by_server(&s, &consumer, reason).await;
            }
        }
    }
}
