//! AMQP transactions (`tx.select`, `tx.commit`, `tx.rollback`) and `basic.recover`, as
//! RabbitMQ's channel implements them (docs/amqp.md, "Transactions").
//!
//! A channel in tx mode holds its publishes and its acks, nacks and rejects until
//! `tx.commit`. The commit publishes what it holds on the ordinary publish path, each
//! publish numbered like a confirm but with [`TX_FLAG`] in its sequence number, so its
//! verdict comes back to the event task like a confirm, which counts it on the channel's
//! [`Committing`] instead of telling the client; then it applies the held settles, the
//! last with a durability fence. `commit-ok` is sent when every publish is committed
//! and the settles are durable; a publish the broker refused (a queue's `reject-publish`
//! overflow, a storage failure) makes the commit fail with RabbitMQ's 406
//! `partial tx completion` instead. `tx.rollback` drops the held publishes and gives the
//! held deliveries back to the channel unacked (RabbitMQ does not redeliver them).
//!
//! What one connection's transactions may hold is bounded ([`Conn::tx_limit`]): a client
//! must not make the daemon buffer without end. Past the bound the publish is refused with
//! 406 on its channel, which discards the channel's transaction.

use tokio::sync::oneshot;

use super::*;
use crate::broker::confirm::ReplySlot;
use crate::broker::event::{Confirm, RequestId};
use amq_protocol::protocol::tx;

/// Marks a publish sequence number as a transaction's (and the sequence number
/// `TX_FLAG` alone as the commit's settle fence). A channel in tx mode cannot be in
/// confirm mode, so its confirm numbers never reach this bit; a confirm channel would need
/// 2^39 publishes to.
pub(super) const TX_FLAG: u64 = 1 << 39;

/// Counted per held publish on top of its body and content header: the method, the
/// decoded properties and the bookkeeping, so that empty messages are bounded too.
const HELD_PUBLISH_OVERHEAD_BYTES: usize = 512;

/// How many of the largest messages a connection's transactions may hold together.
const HELD_MESSAGES_OF_MAX_SIZE: usize = 8;

/// A channel's transaction: what it holds until `tx.commit`.
#[derive(Debug, Default)]
pub(super) struct Tx {
    /// Publishes, checked and authorized, in the order they came.
    publishes: Vec<Publish>,
    /// Acks, nacks and rejects, in the order they came.
    settles: Vec<HeldSettle>,
    /// What the publishes count against [`Conn::tx_limit`].
    bytes: usize,
}

/// One held `basic.ack`, `basic.nack` or `basic.reject`.
#[derive(Debug)]
struct HeldSettle {
    how: Settle,
    /// The deliveries it settles: each one's channel tag and the session's tag.
    tags: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nack { requeue: bool },
    Reject { requeue: bool },
}

/// A commit in progress, on the event task's side: the verdicts still to come.
#[derive(Debug)]
pub(super) struct Committing {
    /// Publishes, and the settle fence if any, not yet answered.
    outstanding: usize,
    /// Why the commit failed, from the first refusal.
    failed: Option<String>,
    /// Told once nothing is outstanding.
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl Committing {
    fn answered(&mut self, refusal: Option<String>) {
        if self.failed.is_none() {
            self.failed = refusal;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.outstanding == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.failed.take().map_or(Ok(()), Err));
            }
        }
    }
}

/// Whether a publish's sequence number is a transaction's.
pub(super) fn is_tx(seq: u64) -> bool {
    seq & TX_FLAG != 0
}

/// The event task's part: a verdict on a committing transaction's publish, or on its
/// settle fence, is counted on the channel's [`Committing`] and not told to the client.
/// `None`: not a transaction's verdict (a `basic.return` of a transaction's publish is
/// written as any other). `Some(true)`: a publish's verdict, whose permit comes back.
pub(super) fn on_event(live: &events::Live, request_id: RequestId, event: &Event) -> Option<bool> {
    let (channel, generation, seq) = events::split(request_id);
    if !is_tx(seq) {
        return None;
    }
    let (publish, refusal) = match event {
        Event::Settled => (true, None),
        Event::Confirm(Confirm::Ack | Confirm::Duplicate) => (true, None),
        Event::Confirm(Confirm::Nack { code, reason }) => (
            true,
            Some(format!("a publish was refused: {} {reason}", code.as_u16())),
        ),
        Event::Ok => (false, None),
        Event::Error { code, text } => (
            false,
            Some(format!("settling failed: {} {text}", code.as_u16())),
        ),
        _ => return None,
    };
    let mut shared = live.lock();
    if let Some(committing) = shared
        .channels
        .get_mut(&channel)
        .filter(|c| c.generation == generation)
        .and_then(|c| c.committing.as_mut())
    {
        committing.answered(refusal);
    }
    Some(publish)
}

impl Conn<'_> {
    /// The most a connection's transactions may hold together, in bytes: eight messages
    /// of the largest size allowed (64 MiB with the default `--max-frame-size`).
    pub(super) fn tx_limit(&self) -> usize {
        self.max_body
            .saturating_add(HELD_PUBLISH_OVERHEAD_BYTES)
            .saturating_mul(HELD_MESSAGES_OF_MAX_SIZE)
    }

    /// `tx.*`, `basic.recover` and `basic.recover-async`.
    pub(super) async fn transaction_method(
        &mut self,
        channel: u16,
        class_id: u16,
        method_id: u16,
        payload: &[u8],
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        let method =
            codec::parse_method(payload).ok_or_else(|| cannot_decode(class_id, method_id))?;
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Recover(r)) => {
                self.recover(channel, r.requeue, 110, session)
            }
            // Deprecated; RabbitMQ treats it as `basic.recover` without the reply.
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(r)) => {
                self.recover(channel, r.requeue, 100, session)
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => self.tx_select(channel),
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => self.tx_commit(channel, session).await,
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => self.tx_rollback(channel),
            _ => Err(cannot_decode(class_id, method_id)),
        }
    }

    /// `basic.recover`: the channel's unacked deliveries go back to their queues, to be
    /// delivered again (to any consumer) with `redelivered` set. Deliveries acked, nacked
    /// or rejected in an open transaction are no longer unacked and stay held, as in
    /// RabbitMQ. `requeue=false` (redeliver to the same consumer only) is refused as
    /// RabbitMQ refuses it: 540 NOT_IMPLEMENTED, a connection error.
    ///
    /// `recover-ok` goes out before the deliveries are requeued, as RabbitMQ's usually
    /// does: clients drop what they had buffered for the channel when it arrives (lapin
    /// does), and a redelivery must not be among it.
    fn recover(
        &mut self,
        channel: u16,
        requeue: bool,
        method_id: u16,
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        if !requeue {
            return Err(Step::Close(
                ConnError::new(Reply::NotImplemented, "requeue=false").on(60, method_id),
            ));
        }
        let tags: Vec<u64> = {
            let mut shared = self.live.lock();
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return Ok(());
            };
            let tags = std::mem::take(&mut ch.tags).into_values().collect();
            // Deliveries numbered but not yet written are among `tags`: the event task
            // leaves them out (they are requeued here), not after `recover-ok`.
            ch.recoveries = ch.recoveries.wrapping_add(1);
            if method_id == 110 {
                self.send(
                    channel,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            tags
        };
        // One batch: the deliveries go back to their queues in their order there.
        self.broker.requeue_all(session, &tags);
        Ok(())
    }

    fn tx_select(&mut self, channel: u16) -> Result<(), Step> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        if state.confirm {
            return self.refuse(
                channel,
                ErrorCode::PreconditionFailed,
                "cannot switch from confirm to tx mode",
                90,
                10,
            );
        }
        // A second select keeps the open transaction, as RabbitMQ's does.
        state.tx.get_or_insert_with(Tx::default);
        self.send(
            channel,
            AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
        );
        Ok(())
    }

    /// `confirm.select`'s check: a channel in tx mode cannot switch (RabbitMQ's 406).
    pub(super) fn refuse_confirm_on_tx(&mut self, channel: u16) -> Option<Result<(), Step>> {
        self.channels.get(&channel)?.tx.as_ref()?;
        Some(self.refuse(
            channel,
            ErrorCode::PreconditionFailed,
            "cannot switch from tx to confirm mode",
            85,
            10,
        ))
    }

    fn not_transactional(&mut self, channel: u16, method_id: u16) -> Result<(), Step> {
        self.refuse(
            channel,
            ErrorCode::PreconditionFailed,
            "channel is not transactional",
            90,
            method_id,
        )
    }

    fn tx_rollback(&mut self, channel: u16) -> Result<(), Step> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        let Some(held) = state.tx.as_mut().map(std::mem::take) else {
            return self.not_transactional(channel, 30);
        };
        self.tx_bytes = self.tx_bytes.saturating_sub(held.bytes);
        // The held deliveries are unacked again, not redelivered (RabbitMQ).
        if let Some(ch) = self.live.lock().channels.get_mut(&channel) {
            for settle in held.settles {
                ch.tags.extend(settle.tags);
            }
        }
        self.send(
            channel,
            AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
        );
        Ok(())
    }

    /// What a closed channel's transaction held, given back: its bytes to the connection's
    /// budget, and the session tags of the deliveries it had settled, which are unsettled
    /// still and are requeued with the channel's others.
    pub(super) fn discard_tx(&mut self, channel: u16) -> Vec<u64> {
        let Some(held) = self.channels.get_mut(&channel).and_then(|c| c.tx.take()) else {
            return Vec::new();
        };
        self.tx_bytes = self.tx_bytes.saturating_sub(held.bytes);
        held.settles
            .into_iter()
            .flat_map(|s| s.tags)
            .map(|(_, stag)| stag)
            .collect()
    }

    /// A whole publish on a channel in tx mode: checked now as RabbitMQ checks it (write
    /// permission, the exchange exists), held until `tx.commit`.
    pub(super) async fn hold_publish(
        &mut self,
        channel: u16,
        done: content::Pending,
        session: &Session,
    ) -> Result<(), Step> {
        let cost = done
            .body
            .len()
            .saturating_add(done.header_bytes)
            .saturating_add(HELD_PUBLISH_OVERHEAD_BYTES);
        let Some(publish) = self.authorized(channel, done, true, session)? else {
            return Ok(());
        };
        if !publish.exchange.is_empty() && session.vhost.exchange(&publish.exchange).is_none() {
            let e = BrokerError::not_found("exchange", &publish.exchange);
            return self.refuse_broker(channel, &e, session);
        }
        let limit = self.tx_limit();
        if self.tx_bytes.saturating_add(cost) > limit {
            let text = format!(
                "the connection's transactions would hold more than {limit} bytes of \
                 uncommitted publishes; commit more often"
            );
            tracing::info!(peer = %self.peer, connection = session.id, channel, limit, "AMQP transaction over its limit");
            return self.refuse(channel, ErrorCode::PreconditionFailed, &text, 60, 40);
        }
        // Under a resource alarm the client is blocked here as for any publish, so a
        // transaction cannot grow while memory is short.
        if let Some(reason) = self.broker.alarms().blocks(publish.properties.persistent) {
            self.wait_while_blocked(session, publish.properties.persistent, reason)
                .await;
        }
        let Some(held) = self.channels.get_mut(&channel).and_then(|c| c.tx.as_mut()) else {
            return Ok(());
        };
        held.publishes.push(*publish);
        held.bytes += cost;
        self.tx_bytes += cost;
        Ok(())
    }

    /// An ack, nack or reject on a channel in tx mode: its deliveries, already taken off
    /// the channel's unacked ones (an unknown tag was refused), held until `tx.commit`.
    /// `false`: the channel is not in tx mode.
    pub(super) fn hold_settle(
        &mut self,
        channel: u16,
        method: &basic::AMQPMethod,
        tags: &mut Vec<(u64, u64)>,
    ) -> bool {
        let Some(held) = self.channels.get_mut(&channel).and_then(|c| c.tx.as_mut()) else {
            return false;
        };
        let how = match method {
            basic::AMQPMethod::Nack(n) => Settle::Nack { requeue: n.requeue },
            basic::AMQPMethod::Reject(r) => Settle::Reject { requeue: r.requeue },
            _ => Settle::Ack,
        };
        if !tags.is_empty() {
            held.settles.push(HeldSettle {
                how,
                tags: std::mem::take(tags),
            });
        }
        true
    }

    /// `tx.commit`: the held publishes on the publish path, then the held settles; the
    /// reply once all of it is durable (see the module docs).
    async fn tx_commit(&mut self, channel: u16, session: &Arc<Session>) -> Result<(), Step> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        let generation = state.generation;
        let Some(held) = state.tx.as_mut().map(std::mem::take) else {
            return self.not_transactional(channel, 20);
        };
        self.tx_bytes = self.tx_bytes.saturating_sub(held.bytes);
        let fence = held.settles.iter().any(|s| !s.tags.is_empty());
        let outstanding = held.publishes.len() + usize::from(fence);
        if outstanding == 0 {
            self.send(
                channel,
                AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
            );
            return Ok(());
        }
        let (done_tx, done) = oneshot::channel();
        {
            let mut shared = self.live.lock();
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return Ok(());
            };
            ch.committing = Some(Committing {
                outstanding,
                failed: None,
                done: Some(done_tx),
            });
        }
        let result = self.apply(channel, generation, held, done, session).await;
        if let Some(ch) = self.live.lock().channels.get_mut(&channel) {
            ch.committing = None;
        }
        match result? {
            // The channel was closed by a refusal on the way.
            None => Ok(()),
            Some(Ok(())) => {
                self.send(
                    channel,
                    AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                );
                Ok(())
            }
            Some(Err(reason)) => {
                tracing::info!(peer = %self.peer, connection = session.id, channel, %reason, "AMQP transaction partly completed");
                self.refuse(
                    channel,
                    ErrorCode::PreconditionFailed,
                    "partial tx completion",
                    90,
                    20,
                )
            }
        }
    }

    /// Applies a transaction and waits for its verdicts. `None`: a refusal closed the
    /// channel on the way (the rest of the transaction is dropped with it).
    async fn apply(
        &mut self,
        channel: u16,
        generation: u8,
        held: Tx,
        done: oneshot::Receiver<Result<(), String>>,
        session: &Arc<Session>,
    ) -> Result<Option<Result<(), String>>, Step> {
        let open = |conn: &Self| conn.channels.get(&channel).is_some_and(|c| !c.closing);
        for (n, publish) in (1u64..).zip(held.publishes) {
            let id = events::request_id(channel, generation, TX_FLAG | n);
            self.publish_native(channel, id, Box::new(publish), session)
                .await?;
            if !open(self) {
                // Its settles are the channel's unsettled deliveries: requeued with it.
                self.cleanups.push(Cleanup {
                    consumers: Vec::new(),
                    delivery_tags: held
                        .settles
                        .into_iter()
                        .flat_map(|s| s.tags)
                        .map(|(_, stag)| stag)
                        .collect(),
                });
                return Ok(None);
            }
        }
        let settles: Vec<(Settle, u64)> = held
            .settles
            .into_iter()
            .flat_map(|s| s.tags.into_iter().map(move |(_, stag)| (s.how, stag)))
            .collect();
        let last = settles.len();
        for (n, &(how, stag)) in settles.iter().enumerate() {
            let reply = (n + 1 == last).then(|| {
                ReplySlot::new(
                    session.replies.clone(),
                    events::request_id(channel, generation, TX_FLAG),
                )
            });
            let (result, method_id) = match how {
                Settle::Ack => (self.broker.ack(session, stag, false, reply).await, 80),
                Settle::Nack { requeue } => (
                    self.broker
                        .nack(session, stag, false, requeue, 0, reply)
                        .await,
                    120,
                ),
                Settle::Reject { requeue } => {
                    (self.broker.reject(session, stag, requeue, reply).await, 90)
                }
            };
            if let Err(e) = result {
                // The broker took the delivery back meanwhile (a consumer timeout): the
                // channel closes, and the deliveries not settled yet are requeued with it.
                self.cleanups.push(Cleanup {
                    consumers: Vec::new(),
                    delivery_tags: settles[n + 1..].iter().map(|&(_, stag)| stag).collect(),
                });
                let text = e.to_string();
                self.refuse(channel, e.code(), &text, 60, method_id)?;
                return Ok(None);
            }
        }
        let verdict = tokio::select! {
            biased;
            v = done => v,
            () = self.writer_gone.cancelled() => return Err(Step::End(Ended::WriterGone)),
            () = session.forced.cancelled() => {
                let reason = session.forced_reason().to_owned();
                return Err(Step::Close(ConnError::new(Reply::ConnectionForced, reason)));
            }
            () = self.shutdown.cancelled() => return Err(Step::Close(shutting_down())),
        };
        // A dropped sender: the channel is gone (closed by the event task's side).
        Ok(verdict.ok())
    }
}
