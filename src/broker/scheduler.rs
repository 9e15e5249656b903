//! The scheduler: holds messages published with a not-before time (`x-delay`,
//! `x-deliver-at`) until they are due, then routes them. Each scheduled message is in the
//! store's `scheduled` table from its confirm until the transaction that releases it, which
//! also stores it in the queues it routes to — so it survives restarts and is released once.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::commit::publish_op;
use super::publish::BCC;
use super::vhost::DEFAULT_VHOST;
use super::{Broker, Inner};
use crate::message::Message;
use crate::store::ScheduledMessage;

/// The longest the scheduler sleeps with nothing due, so a clock jump cannot strand it.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(super) async fn run(
    inner: Weak<Inner>,
    recovered: Vec<ScheduledMessage>,
    mut rx: UnboundedReceiver<ScheduledMessage>,
) {
    let mut pending: BTreeMap<(u64, u64), Arc<Message>> = recovered
        .into_iter()
        .map(|m| ((m.due_ms, m.id), m.message))
        .collect();
    let Some(clock) = inner.upgrade().map(|i| i.ctx.clock.clone()) else {
        return;
    };
    loop {
        let wait = pending
            .first_key_value()
            .map_or(MAX_SLEEP, |((due, _), _)| {
                Duration::from_millis(due.saturating_sub(clock.now_ms())).min(MAX_SLEEP)
            });
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    pending.insert((m.due_ms, m.id), m.message);
                }
                None => return,
            },
            () = tokio::time::sleep(wait) => {}
        }
        let now = clock.now_ms();
        if pending
            .first_key_value()
            .is_none_or(|((due, _), _)| *due > now)
        {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        let broker = Broker { inner };
        // Due messages go out in due order (ties in publish order).
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((due_ms, id), message) = entry.remove_entry();
            broker.release(due_ms, id, message);
        }
    }
}

impl Broker {
    /// Routes a due scheduled message and hands the move to the store.
    fn release(&self, due_ms: u64, id: u64, message: Arc<Message>) {
        // Outside `/`, the stored exchange is `vhost NUL exchange` (`entity_key`): the
        // message goes out with the bare name, routed in its virtual host, if it still exists.
        let (vhost, message) = match message.exchange.split_once('\0') {
            Some((vhost, exchange)) => {
                let mut m = Message::clone(&message);
                let vhost = vhost.to_owned();
                m.exchange = exchange.to_owned();
                (vhost, Arc::new(m))
            }
            None => (DEFAULT_VHOST.to_owned(), message),
        };
        let targets = self
            .vhost(&vhost)
            .and_then(|vh| {
                self.route(
                    &vh,
                    &message.exchange,
                    &message.routing_key,
                    &message.properties.headers,
                )
                .ok()
            })
            .unwrap_or_default();
        let publish = if targets.is_empty() {
            self.inner.stats.unroutable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(exchange = %message.exchange, key = %message.routing_key, "a scheduled message was unroutable when due; dropped");
            None
        } else {
            self.inner.stats.routed.fetch_add(1, Ordering::Relaxed);
            // Sender-selected distribution: `BCC` routed it; it is not stored with it.
            let message = if message.properties.headers.contains_key(BCC) {
                let mut m = Message::clone(&message);
                m.properties.headers = m.properties.headers.without(|k| k == BCC);
                Arc::new(m)
            } else {
                message
            };
            Some(publish_op(message, targets, None))
        };
        self.inner.store.release(due_ms, id, publish);
    }
}
