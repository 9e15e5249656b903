//! [`ReplySink`]: how replies produced off the connection's task (publisher confirms and
//! durable-ack replies, completed on the store writer thread after its commit by the completion
//! step, `commit.rs`) reach the
//! connection's writer without the store writer ever blocking on a slow client.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_protocol::{Envelope, Frame, RequestId};

/// Replies waiting for a connection's writer task. The store writer pushes and notifies; the
/// connection's writer drains in order. Unbounded by itself: the connection bounds it by
/// limiting how many publishes it has in flight.
#[derive(Debug, Default)]
pub struct ReplySink {
    pending: Mutex<Vec<Envelope>>,
    notify: Notify,
}

impl ReplySink {
    /// A new, empty sink.
    pub fn new() -> Arc<Self> {
        Arc::new(ReplySink::default())
    }

    /// Queues a reply and wakes the writer.
    pub fn push(&self, envelope: Envelope) {
        self.pending.lock().push(envelope);
        self.notify.notify_one();
    }

    /// Takes every queued reply, in order, into `out`.
    pub fn drain_into(&self, out: &mut Vec<Envelope>) {
        out.append(&mut self.pending.lock());
    }

    /// Resolves when something may have been pushed since the last drain.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Where one request's reply goes: a sink and the request id.
#[derive(Debug)]
pub struct ReplySlot {
    sink: Arc<ReplySink>,
    request_id: RequestId,
}

impl ReplySlot {
    /// A slot for `request_id` on `sink`.
    pub fn new(sink: Arc<ReplySink>, request_id: RequestId) -> Self {
        ReplySlot { sink, request_id }
    }

    /// Sends the reply.
    pub fn reply(self, frame: Frame) {
        self.sink.push(Envelope::new(self.request_id, frame));
    }
}
