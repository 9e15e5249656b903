//! [`ReplySink`]: how replies produced off the connection's task (publisher confirms and
//! durable-ack replies, completed on the store writer thread after its commit by the completion
//! step, `commit.rs`) reach the
//! connection's writer without the store writer ever blocking on a slow client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::event::{Confirm, Event, RequestId};

/// Replies waiting for a connection's writer task: events, each with the request it answers.
/// The store writer pushes and notifies; the connection's writer drains in order. Unbounded by itself: the connection bounds it by
/// limiting how many publishes it has in flight.
#[derive(Debug, Default)]
pub struct ReplySink {
    pending: Mutex<Vec<(RequestId, Event)>>,
    notify: Notify,
    /// The connection's publishes on the commit-first path not yet enqueued
    /// ([`SlowPublish`]).
    slow_publishes: AtomicUsize,
}

impl ReplySink {
    /// A new, empty sink.
    pub fn new() -> Arc<Self> {
        Arc::new(ReplySink::default())
    }

    /// Queues a reply to `request_id` and wakes the writer.
    pub fn push(&self, request_id: RequestId, event: Event) {
        self.pending.lock().push((request_id, event));
        self.notify.notify_one();
    }

    /// Takes every queued reply, in order, into `out`.
    pub fn drain_into(&self, out: &mut Vec<(RequestId, Event)>) {
        out.append(&mut self.pending.lock());
    }

    /// Whether a publish of this connection is still on its way through the commit to its
    /// queues: until it is enqueued, the connection's later publishes must not be enqueued
    /// before their commit, which would overtake it.
    pub fn has_slow_publishes(&self) -> bool {
        self.slow_publishes.load(Ordering::Acquire) != 0
    }

    /// Resolves when something may have been pushed since the last drain.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Counts one publish on the commit-first path for its connection's
/// [`ReplySink::has_slow_publishes`], from its routing until it is enqueued.
#[derive(Debug)]
pub struct SlowPublish(Arc<ReplySink>);

impl SlowPublish {
    /// Counts a publish of the connection `sink` belongs to.
    pub fn new(sink: Arc<ReplySink>) -> Self {
        sink.slow_publishes.fetch_add(1, Ordering::AcqRel);
        SlowPublish(sink)
    }
}

impl Drop for SlowPublish {
    fn drop(&mut self) {
        self.0.slow_publishes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one request's reply goes: a sink and the request id.
#[derive(Debug)]
pub struct ReplySlot {
    sink: Arc<ReplySink>,
    request_id: RequestId,
    /// The publish asked for no confirm: success goes as [`Event::Settled`].
    no_confirm: bool,
}

impl ReplySlot {
    /// A slot for `request_id` on `sink`.
    pub fn new(sink: Arc<ReplySink>, request_id: RequestId) -> Self {
        ReplySlot {
            sink,
            request_id,
            no_confirm: false,
        }
    }

    /// A slot for a publish's confirm; with `no_confirm`, an Ack or a Duplicate is not
    /// sent (see [`quiet`]), a Nack is.
    pub fn for_publish(sink: Arc<ReplySink>, request_id: RequestId, no_confirm: bool) -> Self {
        ReplySlot {
            sink,
            request_id,
            no_confirm,
        }
    }

    /// Whether a success goes to no one (a publish that asked for no confirm).
    pub fn is_quiet(&self) -> bool {
        self.no_confirm
    }

    /// Sends the reply.
    pub fn reply(self, event: Event) {
        let event = if self.no_confirm { quiet(event) } else { event };
        self.sink.push(self.request_id, event);
    }
}

/// What a no-confirm publish's verdict becomes: its success (Ack, or Duplicate, whose
/// earlier message is stored) is [`Event::Settled`], said to no one; a refusal is unchanged,
/// because nothing may be refused silently. Every path that confirms a publish goes
/// through here, so the rule lives in one place.
pub fn quiet(event: Event) -> Event {
    match event {
        Event::Confirm(Confirm::Ack | Confirm::Duplicate) => Event::Settled,
        other => other,
    }
}
