//! `warren::client`: the async client library for Warren, used by the `warren` CLI, the
//! integration tests and the bench tool.
//!
//! A [`Client`] is one connection. It is cheap to clone and every clone may be used from its
//! own task at once: requests carry ids, so any number can be in flight, and replies are paired
//! with them by the connection's reader task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren::client::ClientError> {
//! use warren::client::{Client, ConsumeOptions, OutgoingMessage, QueueOptions};
//!
//! let client = Client::connect("127.0.0.1:5680").await?;
//! client.declare_queue("jobs", QueueOptions { durable: true, ..Default::default() }).await?;
//! let outcome = client
//!     .publish_and_confirm(OutgoingMessage::new("", "jobs", "hello").persistent())
//!     .await?;
//! assert!(outcome.is_confirmed());
//!
//! let mut consumer = client.consume("jobs", ConsumeOptions::default()).await?;
//! if let Some(delivery) = consumer.next().await {
//!     client.ack(delivery.delivery_tag, false).await?;
//! }
//! client.close().await
//! # }
//! ```
//!
//! # Layout
//! - this file — [`Client`] and the option types of its requests; admin commands answer
//!   the types of [`crate::admin_types`] ([`Client::admin_typed`], [`decode_admin`]);
//! - `connection` (private) — handshake, reader/writer/heartbeat tasks and the table of
//!   pending requests;
//! - [`publish`] — [`OutgoingMessage`], [`MessageRef`], [`PublishOutcome`], [`PendingConfirm`];
//! - [`consumer`] — [`Consumer`], [`Delivery`], [`CancelReason`];
//! - [`error`] — [`ClientError`].

mod connection;
pub mod consumer;
pub mod error;
pub mod publish;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;
use warren_protocol::{
    Ack, Consume, Envelope, ErrorCode, ExchangeBind, ExchangeDeclare, ExchangeDelete, Frame, Get,
    Nack, Qos, QueueBind, QueueDeclare, QueueDelete, Reject, PUBLISH_HEADROOM_BYTES,
};

pub use self::consumer::{CancelReason, Consumer, Delivery};
pub use self::error::ClientError;
pub use self::publish::{
    MessageRef, OutgoingMessage, PendingConfirm, PublishOutcome, Refusal, RefusalKind,
};
pub use warren_protocol::{
    ExchangeKind, FieldTable, FieldValue, Hello, Properties, QueueDeclareOk,
};

use self::connection::{normal_close, unexpected, CloseInfo, Connection, ConsumerSlot, Pending};
use self::publish::unconfirmed_id;

/// Decodes the JSON result of the admin command `command` (from [`Client::admin`]) as `T`,
/// its type in [`crate::admin_types`].
///
/// # Errors
/// [`ClientError::BadAdminReply`] naming the command and the field: the reply lacks a field
/// `T` needs, or has one of the wrong type.
pub fn decode_admin<T: serde::de::DeserializeOwned>(
    command: &str,
    reply: &serde_json::Value,
) -> Result<T, ClientError> {
    T::deserialize(reply).map_err(|e| ClientError::BadAdminReply(format!("{command}: {e}")))
}

/// Who a [`Client`] logs in as, and the virtual host it works in. The default is what a
/// fresh server accepts from the same host: user `guest`, password `guest`, virtual host
/// `/`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
        }
    }
}

impl ConnectOptions {
    /// Options for `user` with `password` on virtual host `/`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        ConnectOptions {
            user: user.into(),
            password: password.into(),
            ..ConnectOptions::default()
        }
    }

    /// The same credentials on virtual host `vhost`.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }
}

// Not derived: a password must never reach a log line through `{:?}`.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("vhost", &self.vhost)
            .finish()
    }
}

/// Bound on connecting, sending the preface, receiving `Hello` and opening the connection
/// (`Open`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Client::close`] waits for the server's `CloseOk`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of [`Client::declare_exchange`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeOptions {
    /// Survives a server restart.
    pub durable: bool,
    /// Only check that the exchange exists (`NOT_FOUND` if not); create nothing.
    pub passive: bool,
    /// Deleted by the server when its last binding as a source is removed.
    pub auto_delete: bool,
    /// Clients cannot publish to it (`ACCESS_REFUSED`); it is reached through
    /// exchange-to-exchange bindings, as an alternate or as a dead-letter exchange.
    pub internal: bool,
    /// Extra arguments, kept with the exchange.
    pub arguments: FieldTable,
}

/// Options of [`Client::declare_queue`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueOptions {
    /// Survives a server restart (with its persistent messages).
    pub durable: bool,
    /// Belongs to this connection, and is deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Only check that the queue exists (`NOT_FOUND` if not); create nothing.
    pub passive: bool,
    /// Queue arguments (`x-message-ttl`, `x-dead-letter-exchange`, ...).
    pub arguments: FieldTable,
}

/// Options of [`Client::consume`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumeOptions {
    /// The consumer's tag on this connection; empty lets the server choose one
    /// ([`Consumer::tag`] tells which).
    pub consumer_tag: String,
    /// Deliveries count as acknowledged when sent: no acks, and no prefetch limit.
    pub no_ack: bool,
    /// Fail if the queue has other consumers, and keep others off it.
    pub exclusive: bool,
    /// Consumer arguments (`x-consumer-timeout`: see [`ConsumeOptions::consumer_timeout`]).
    pub arguments: FieldTable,
}

impl ConsumeOptions {
    /// Sets this consumer's own consumer timeout (the `x-consumer-timeout` argument, whole
    /// milliseconds): a delivery left unacked this long costs the consumer, whatever the
    /// queue's `x-consumer-timeout` or the server's default says. Less than 1 ms is refused
    /// by the server.
    #[must_use]
    pub fn consumer_timeout(mut self, timeout: std::time::Duration) -> Self {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self.arguments
            .insert("x-consumer-timeout".to_owned(), FieldValue::Int(ms));
        self
    }

    /// Where a consumer of a stream starts reading (the `x-stream-offset` argument;
    /// docs/streams.md). Without it a stream consumer starts at `Next`, or, named, where
    /// its name left off.
    #[must_use]
    pub fn stream_offset(mut self, offset: StreamOffset) -> Self {
        let value = match offset {
            StreamOffset::First => FieldValue::String("first".into()),
            StreamOffset::Last => FieldValue::String("last".into()),
            StreamOffset::Next => FieldValue::String("next".into()),
            StreamOffset::Offset(n) => FieldValue::U64(n),
            StreamOffset::Timestamp(ms) => FieldValue::String(crate::cli::output::rfc3339_ms(
                i64::try_from(ms).unwrap_or(i64::MAX),
            )),
        };
        self.arguments.insert("x-stream-offset".to_owned(), value);
        self
    }

    /// Names a stream consumer: the server keeps its position (one past what it settled)
    /// durably, and a consumer with this name and no [`ConsumeOptions::stream_offset`]
    /// resumes there, after a reconnect or a server restart (`x-stream-consumer-name`).
    #[must_use]
    pub fn stream_consumer_name(mut self, name: &str) -> Self {
        self.arguments.insert(
            "x-stream-consumer-name".to_owned(),
            FieldValue::String(name.to_owned()),
        );
        self
    }
}

/// Where a stream consumer starts ([`ConsumeOptions::stream_offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest entry the stream still holds.
    First,
    /// The start of the stream's last chunk (RabbitMQ's `last`).
    Last,
    /// Only what is appended from now on.
    Next,
    /// This offset.
    Offset(u64),
    /// The first entry appended at or after this time, ms since the Unix epoch.
    Timestamp(u64),
}

/// A connection to a Warren server. Clones share the connection.
///
/// The connection closes when [`Client::close`] is called, when the server ends it, or when
/// the last clone (and the last [`Consumer`]) is dropped; frames already queued (such as
/// fire-and-forget acks) are still sent then, within a short bound.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    connection: Arc<Connection>,
    hello: Hello,
    /// Taken by [`Client::close`], which waits for the writer to send what is queued.
    writer_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if !self.connection.is_closed() {
            // Best effort: the writer drains its queue (ending with this Close) before it
            // stops.
            self.connection.close_now();
            self.connection
                .connection_lost(CloseInfo::local("the client was dropped"));
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.hello.server)
            .field("closed", &self.inner.connection.is_closed())
            .finish_non_exhaustive()
    }
}

/// Unwraps the reply `$frame` as `$pattern => $value`, or fails with `UnexpectedReply`.
macro_rules! expect_reply {
    ($frame:expr, $expected:literal, $pattern:pat => $value:expr) => {
        match $frame {
            $pattern => Ok($value),
            other => Err(unexpected($expected, &other)),
        }
    };
}

impl Client {
    /// Connects to `addr` (`host:port`) as `guest` on virtual host `/` (see
    /// [`ConnectOptions`]), performs the handshake and starts the connection's tasks. Must be
    /// called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ClientError::Io`] when the TCP connection fails or the whole handshake takes longer
    /// than [`CONNECT_TIMEOUT`]; [`ClientError::Server`] when the server answers the preface
    /// with an error (an unsupported version); [`ClientError::NotWarren`] when what answers
    /// does not speak Warren's protocol (an HTTP or AMQP server, say);
    /// [`ClientError::Handshake`] when it answers with another frame than `Hello`.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Self::open(addr, None, &ConnectOptions::default()).await
    }

    /// Connects to `addr` as [`Client::connect`] does, logging in with `options`.
    ///
    /// # Errors
    /// As [`Client::connect`]; and [`ClientError::Server`] with `ACCESS_REFUSED` when the
    /// server refuses the credentials (the message is only `authentication failed`, whether
    /// the user is unknown or the password wrong), or the user may not use the virtual host,
    /// and with `NOT_FOUND` when the virtual host does not exist.
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        Self::open(addr, None, options).await
    }

    /// As [`Client::connect`], inside TLS: the server's certificate is checked against
    /// `tls`'s CAs and server name (by default the host of `addr`), and `tls`'s client
    /// certificate is presented if the server asks for one.
    ///
    /// # Errors
    /// As [`Client::connect`], and [`ClientError::TlsHandshake`] when the TLS handshake fails
    /// (the certificate is not trusted or not for the name, the server wants a client
    /// certificate, the port does not speak TLS).
    pub async fn connect_tls(
        addr: &str,
        tls: &crate::tls::ClientTls,
    ) -> Result<Client, ClientError> {
        Self::open(addr, Some(tls), &ConnectOptions::default()).await
    }

    /// As [`Client::connect_tls`], logging in with `options` (see [`Client::connect_with`]).
    ///
    /// # Errors
    /// As [`Client::connect_tls`] and [`Client::connect_with`].
    pub async fn connect_tls_with(
        addr: &str,
        tls: &crate::tls::ClientTls,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        Self::open(addr, Some(tls), options).await
    }

    async fn open(
        addr: &str,
        tls: Option<&crate::tls::ClientTls>,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, connection::connect(addr, tls, options))
            .await
            .map_err(|_| {
                ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection and Hello within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                ))
            })??;
        debug!(server = %opened.hello.server, max_frame_size = opened.hello.max_frame_size,
            heartbeat_ms = opened.hello.heartbeat_ms, "connected");
        Ok(Client {
            inner: Arc::new(ClientInner {
                connection: opened.connection,
                hello: opened.hello,
                writer_task: Mutex::new(Some(opened.writer_task)),
            }),
        })
    }

    /// The server's greeting: protocol version, frame size limit, heartbeat interval.
    pub fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    /// Whether the server has blocked this connection (a resource alarm: low disk space), and
    /// why. While blocked, the server reads none of the connection's frames; publishes wait
    /// for their confirms until it is unblocked. The receiver sees every change.
    pub fn blocked(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.connection.blocked()
    }

    /// Whether the connection has ended (closed by either side, or lost).
    pub fn is_closed(&self) -> bool {
        self.inner.connection.is_closed()
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// Sends `frame` as a new request and waits for its reply, which `make` turns into the
    /// pending entry the reader resolves.
    async fn call<T>(
        &self,
        frame: Frame,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Pending,
    ) -> Result<T, ClientError> {
        let rx = self.start(frame, make).await?;
        rx.await
            .unwrap_or_else(|_| Err(self.inner.connection.closed_error()))
    }

    /// Registers and sends a request; returns the receiver of its reply.
    async fn start<T>(
        &self,
        frame: Frame,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Pending,
    ) -> Result<oneshot::Receiver<Result<T, ClientError>>, ClientError> {
        let connection = &self.inner.connection;
        let id = connection.next_request_id();
        let (tx, rx) = oneshot::channel();
        connection.register(id, make(tx))?;
        // Until the frame is queued, a dropped future or a failed send must not leave the
        // entry behind; once queued, the reader removes it when the reply comes.
        let guard = Unregister {
            connection,
            id,
            armed: true,
        };
        connection.send(Envelope::new(id, frame)).await?;
        guard.disarm();
        Ok(rx)
    }

    /// A request answered by one frame.
    async fn request(&self, frame: Frame) -> Result<Frame, ClientError> {
        self.call(frame, Pending::Reply).await
    }

    /// A request answered by `Ok`.
    async fn request_ok(&self, frame: Frame) -> Result<(), ClientError> {
        let reply = self.request(frame).await?;
        expect_reply!(reply, "Ok", Frame::Ok => ())
    }

    /// Declares an exchange; idempotent when the attributes match the existing exchange.
    ///
    /// # Errors
    /// [`ClientError::Server`] with `PRECONDITION_FAILED` when it exists with other
    /// attributes, `NOT_FOUND` for a passive declare of a missing exchange.
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        options: ExchangeOptions,
    ) -> Result<(), ClientError> {
        self.request_ok(Frame::ExchangeDeclare(ExchangeDeclare {
            name: name.to_owned(),
            kind,
            durable: options.durable,
            passive: options.passive,
            auto_delete: options.auto_delete,
            internal: options.internal,
            arguments: options.arguments,
        }))
        .await
    }

    /// Deletes an exchange and its bindings; with `if_unused`, only if it has no bindings.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), ClientError> {
        self.request_ok(Frame::ExchangeDelete(ExchangeDelete {
            name: name.to_owned(),
            if_unused,
        }))
        .await
    }

    /// Declares a queue; an empty `name` asks the server to choose one (the reply names
    /// it). Idempotent when the attributes match the existing queue.
    pub async fn declare_queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<QueueDeclareOk, ClientError> {
        let reply = self
            .request(Frame::QueueDeclare(QueueDeclare {
                name: name.to_owned(),
                durable: options.durable,
                exclusive: options.exclusive,
                auto_delete: options.auto_delete,
                passive: options.passive,
                arguments: options.arguments,
            }))
            .await?;
        expect_reply!(reply, "QueueDeclareOk", Frame::QueueDeclareOk(ok) => ok)
    }

    /// Deletes a queue with its bindings and messages; returns how many messages it held.
    /// `if_unused` refuses while it has consumers, `if_empty` while it holds messages.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, ClientError> {
        let reply = self
            .request(Frame::QueueDelete(QueueDelete {
                name: name.to_owned(),
                if_unused,
                if_empty,
            }))
            .await?;
        expect_reply!(reply, "QueueDeleteOk", Frame::QueueDeleteOk { message_count } => message_count)
    }

    /// Removes every ready message from a queue; returns how many.
    pub async fn purge_queue(&self, name: &str) -> Result<u64, ClientError> {
        let reply = self
            .request(Frame::QueuePurge {
                name: name.to_owned(),
            })
            .await?;
        expect_reply!(reply, "QueuePurgeOk", Frame::QueuePurgeOk { message_count } => message_count)
    }

    /// Binds `queue` to `exchange` with a binding key (a pattern for topic exchanges) and
    /// arguments (`x-match` and values for headers exchanges).
    pub async fn bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.request_ok(Frame::QueueBind(binding(
            queue,
            exchange,
            routing_key,
            arguments,
        )))
        .await
    }

    /// Removes a binding made by [`Client::bind`] with the same key and arguments.
    pub async fn unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.request_ok(Frame::QueueUnbind(binding(
            queue,
            exchange,
            routing_key,
            arguments,
        )))
        .await
    }

    /// Binds exchange `destination` to exchange `source` with a binding key and arguments
    /// (matched by the source's kind): what the source routes by it, the destination routes
    /// on.
    pub async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.request_ok(Frame::ExchangeBind(exchange_binding(
            destination,
            source,
            routing_key,
            arguments,
        )))
        .await
    }

    /// Removes a binding made by [`Client::bind_exchange`] with the same key and arguments.
    pub async fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.request_ok(Frame::ExchangeUnbind(exchange_binding(
            destination,
            source,
            routing_key,
            arguments,
        )))
        .await
    }

    /// Sets the prefetch limit (max unacked deliveries per consumer; 0 = no limit) for
    /// consumers started afterwards on this connection.
    pub async fn qos(&self, prefetch_count: u32) -> Result<(), ClientError> {
        self.request_ok(Frame::Qos(Qos { prefetch_count })).await
    }

    /// Refuses, before anything is sent, a publish that would exceed the server's frame size
    /// limit minus [`PUBLISH_HEADROOM_BYTES`].
    fn check_fits(&self, publish: &warren_protocol::PublishRef<'_>) -> Result<(), ClientError> {
        let max = self
            .inner
            .hello
            .max_frame_size
            .saturating_sub(PUBLISH_HEADROOM_BYTES);
        let len = publish.frame_len();
        if len > max as usize {
            return Err(ClientError::BodyTooLarge {
                body: publish.body.len(),
                frame: len,
                limit: max as usize,
            });
        }
        Ok(())
    }

    /// Publishes a message without waiting for its confirm: returns once the frame is queued
    /// to the connection's writer. Await the [`PendingConfirm`] for the outcome; keep many in
    /// flight (e.g. in a `FuturesOrdered`) for throughput.
    ///
    /// # Errors
    /// [`ClientError::BodyTooLarge`] when the publish would exceed the server's frame size
    /// limit minus [`PUBLISH_HEADROOM_BYTES`]; [`ClientError::Closed`] when the
    /// connection has ended.
    pub async fn publish(&self, msg: OutgoingMessage) -> Result<PendingConfirm, ClientError> {
        self.publish_ref(msg.borrowed()).await
    }

    /// As [`Client::publish`], from borrowed parts: the message is encoded straight into the
    /// connection's outgoing bytes, so nothing of it is copied or allocated but those bytes.
    /// For a publisher that keeps its names, properties and a body buffer between messages.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn publish_ref(&self, msg: MessageRef<'_>) -> Result<PendingConfirm, ClientError> {
        let frame = msg.frame(false);
        self.check_fits(&frame)?;
        let connection = &self.inner.connection;
        let id = connection.next_request_id();
        let (tx, rx) = oneshot::channel();
        connection.register(id, Pending::Publish { tx, returned: None })?;
        let guard = Unregister {
            connection,
            id,
            armed: true,
        };
        connection.send_with(|buf| frame.encode(id, buf)).await?;
        guard.disarm();
        Ok(PendingConfirm { request_id: id, rx })
    }

    /// Publishes a message without asking for a confirm (the `Publish` no-confirm flag,
    /// PROTOCOL.md §9): returns once the frame is queued for writing, with the publish's
    /// request id. The server sends no reply when it takes the message, which saves a
    /// frame per message each way of the reader's work; it is stored and ordered exactly
    /// as a confirmed one.
    ///
    /// Nothing is refused silently: a Nack (a full `reject-publish` queue), an `Error` (an
    /// unknown exchange) or a `Return` (a mandatory message no queue took) for it arrives
    /// later and is kept: read them with [`Client::take_refusals`] (which names the request
    /// id returned here) or count them with [`Client::refused_count`].
    ///
    /// To know the messages are safe, follow them with [`Client::publish_and_confirm`] on
    /// the same client: confirms are in commit order, so its `Confirmed` means every earlier
    /// publish on the connection was committed or refused. A Nack for an earlier one is
    /// always kept by the time that call returns; an `Error` or `Return` is sent as soon as
    /// the server reads the publish, so it normally is too.
    ///
    /// # Errors
    /// As [`Client::publish`]: the message is too large for a frame, or the connection is
    /// closed. A refusal by the server is not an error here.
    pub async fn publish_unconfirmed(&self, msg: OutgoingMessage) -> Result<u64, ClientError> {
        self.publish_unconfirmed_ref(msg.borrowed()).await
    }

    /// As [`Client::publish_unconfirmed`], from borrowed parts (see [`Client::publish_ref`]).
    ///
    /// # Errors
    /// As [`Client::publish_unconfirmed`].
    pub async fn publish_unconfirmed_ref(&self, msg: MessageRef<'_>) -> Result<u64, ClientError> {
        let frame = msg.frame(true);
        self.check_fits(&frame)?;
        let connection = &self.inner.connection;
        let id = unconfirmed_id(connection.next_request_id());
        connection.send_with(|buf| frame.encode(id, buf)).await?;
        Ok(id)
    }

    /// Takes the refusals of publishes sent with [`Client::publish_unconfirmed`] that
    /// arrived so far, oldest first. At most 65,536 are kept; older ones are dropped, but
    /// [`Client::refused_count`] still counts them.
    pub fn take_refusals(&self) -> Vec<Refusal> {
        self.inner.connection.take_refusals()
    }

    /// How many publishes sent with [`Client::publish_unconfirmed`] were refused on this
    /// connection so far (taken, kept or dropped).
    pub fn refused_count(&self) -> u64 {
        self.inner.connection.refused_count()
    }

    /// Publishes a message and waits for its confirm.
    ///
    /// # Errors
    /// As [`Client::publish`], plus [`ClientError::Server`] when the server refuses the
    /// publish with an error (an unknown exchange). A returned or nacked message is not an
    /// error: see [`PublishOutcome`].
    pub async fn publish_and_confirm(
        &self,
        msg: OutgoingMessage,
    ) -> Result<PublishOutcome, ClientError> {
        self.publish(msg).await?.await
    }

    /// Starts a push consumer on `queue`. Deliveries that arrive right after the server's
    /// `ConsumeOk` are never lost: the consumer is registered before they are read.
    pub async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Consumer, ClientError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let slot = ConsumerSlot { events: events_tx };
        let frame = Frame::Consume(Consume {
            queue: queue.to_owned(),
            consumer_tag: options.consumer_tag,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            arguments: options.arguments,
        });
        let tag = self.call(frame, |tx| Pending::Consume { tx, slot }).await?;
        Ok(Consumer::new(tag, events_rx, self.clone()))
    }

    /// Stops a consumer. Once this returns no delivery for it follows, and the [`Consumer`]
    /// yields the deliveries it already received and then `None`, with
    /// [`CancelReason::Cancelled`]. The server requeues the consumer's unacknowledged
    /// deliveries; acknowledging one of them afterwards is an unknown-tag error that closes
    /// the connection if sent fire-and-forget, so settle them before cancelling, or use
    /// [`Client::cancel_keeping_unacked`].
    pub async fn cancel(&self, consumer_tag: &str) -> Result<(), ClientError> {
        self.send_cancel(consumer_tag, false).await
    }

    /// Stops a consumer like [`Client::cancel`], but leaves its unacknowledged deliveries
    /// with the connection (AMQP's `basic.cancel`): settle them afterwards as usual; those
    /// still unsettled when the connection closes are requeued. This is how to take exactly
    /// N messages: cancel once the N-th has arrived, then acknowledge, so no acknowledgement
    /// makes room for another delivery.
    pub async fn cancel_keeping_unacked(&self, consumer_tag: &str) -> Result<(), ClientError> {
        self.send_cancel(consumer_tag, true).await
    }

    async fn send_cancel(&self, consumer_tag: &str, keep_unacked: bool) -> Result<(), ClientError> {
        let frame = Frame::Cancel(warren_protocol::Cancel {
            consumer_tag: consumer_tag.to_owned(),
            keep_unacked,
        });
        let reply = self
            .call(frame, |tx| Pending::Cancel {
                consumer_tag: consumer_tag.to_owned(),
                tx: Some(tx),
            })
            .await?;
        expect_reply!(reply, "Ok", Frame::Ok => ())
    }

    /// Runs an administrative command (`status`, `queue.list`, `dlq.replay`, ...; see
    /// PROTOCOL.md §15) and returns its JSON result as the server sent it. To read it,
    /// prefer [`Client::admin_typed`] (or [`decode_admin`] on this value).
    ///
    /// # Errors
    /// The request failed, the server refused the command, or the reply is not JSON
    /// ([`ClientError::BadAdminReply`]).
    pub async fn admin(
        &self,
        command: &str,
        arguments: FieldTable,
    ) -> Result<serde_json::Value, ClientError> {
        let frame = Frame::Admin(warren_protocol::Admin {
            command: command.to_owned(),
            arguments,
        });
        let reply = self.request(frame).await?;
        let body = expect_reply!(reply, "AdminOk", Frame::AdminOk { body } => body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::BadAdminReply(format!("{command}: not valid JSON: {e}")))
    }

    /// Runs an administrative command and decodes its result as `T`, the command's type in
    /// [`crate::admin_types`]: e.g. `admin_typed::<Vec<QueueInfo>>("queue.list", ..)`.
    ///
    /// # Errors
    /// As [`Client::admin`]; [`ClientError::BadAdminReply`] also when the reply lacks a field
    /// `T` needs or has one of the wrong type.
    pub async fn admin_typed<T: serde::de::DeserializeOwned>(
        &self,
        command: &str,
        arguments: FieldTable,
    ) -> Result<T, ClientError> {
        let reply = self.admin(command, arguments).await?;
        decode_admin(command, &reply)
    }

    /// Pulls one message from `queue`; `None` when it has no ready message.
    pub async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>, ClientError> {
        let reply = self
            .request(Frame::Get(Get {
                queue: queue.to_owned(),
                no_ack,
            }))
            .await?;
        match reply {
            Frame::GetOk(ok) => Ok(Some((*ok).into())),
            Frame::GetEmpty => Ok(None),
            other => Err(unexpected("GetOk or GetEmpty", &other)),
        }
    }

    /// Sends `frame` as fire-and-forget (request id 0, no reply) or, when `durable`, as a
    /// request whose `Ok` means the server has made it durable.
    async fn settle(&self, frame: Frame, durable: bool) -> Result<(), ClientError> {
        if durable {
            self.request_ok(frame).await
        } else {
            self.inner.connection.send(Envelope::new(0, frame)).await
        }
    }

    /// Acknowledges a delivery (with `multiple`, also every earlier unacked one). Fire and
    /// forget: returns once the frame is queued to the writer; the server sends no reply.
    pub async fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<(), ClientError> {
        self.settle(ack(delivery_tag, multiple), false).await
    }

    /// Like [`Client::ack`], but waits until the server has made the ack durable.
    pub async fn ack_durable(&self, delivery_tag: u64, multiple: bool) -> Result<(), ClientError> {
        self.settle(ack(delivery_tag, multiple), true).await
    }

    /// Refuses a delivery (with `multiple`, also every earlier unacked one): requeue it (at
    /// the head, ready again after `delay_ms`) or dead-letter/drop it. Fire and forget.
    ///
    /// A nack is not a failure (RabbitMQ 4.3): it raises the message's `acquired_count` but
    /// not its `delivery_count`, so it never reaches the queue's `x-delivery-limit`. Use it
    /// when this consumer cannot take the message now; use [`Client::reject`] when the
    /// message itself failed.
    pub async fn nack(
        &self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
        delay_ms: u64,
    ) -> Result<(), ClientError> {
        self.settle(nack(delivery_tag, multiple, requeue, delay_ms), false)
            .await
    }

    /// Like [`Client::nack`], but waits until the server has made it durable.
    pub async fn nack_durable(
        &self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
        delay_ms: u64,
    ) -> Result<(), ClientError> {
        self.settle(nack(delivery_tag, multiple, requeue, delay_ms), true)
            .await
    }

    /// Refuses one delivery as failed: requeue it, or dead-letter/drop it. Fire and forget.
    ///
    /// A reject is a failure (RabbitMQ 4.3): it raises the message's `delivery_count`, which
    /// the queue's `x-delivery-limit` compares, and on requeue the queue's `x-retry-backoff`
    /// applies.
    pub async fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<(), ClientError> {
        self.settle(reject(delivery_tag, requeue), false).await
    }

    /// Like [`Client::reject`], but waits until the server has made it durable.
    pub async fn reject_durable(
        &self,
        delivery_tag: u64,
        requeue: bool,
    ) -> Result<(), ClientError> {
        self.settle(reject(delivery_tag, requeue), true).await
    }

    /// Closes the connection: sends `Close` (200, "bye") after everything already queued,
    /// waits up to [`CLOSE_TIMEOUT`] for `CloseOk`, then shuts the socket. Requests still
    /// pending fail with [`ClientError::Closed`] and consumers end. Closing a closed
    /// connection does nothing.
    pub async fn close(&self) -> Result<(), ClientError> {
        let connection = &self.inner.connection;
        let (tx, rx) = oneshot::channel();
        if connection.set_close_waiter(tx) {
            let id = connection.next_request_id();
            // Bounded as a whole: queueing the Close can wait too, if the server stopped
            // reading.
            let handshake = async {
                if connection
                    .send(Envelope::new(id, normal_close()))
                    .await
                    .is_ok()
                {
                    let _ = rx.await;
                }
            };
            if tokio::time::timeout(CLOSE_TIMEOUT, handshake)
                .await
                .is_err()
            {
                debug!("no CloseOk within {CLOSE_TIMEOUT:?}; closing anyway");
            }
            connection.connection_lost(CloseInfo::new(
                ErrorCode::Normal.as_u16(),
                "closed by the client",
            ));
        }
        let writer = self.inner.writer_task.lock().take();
        if let Some(writer) = writer {
            // The writer stops within its own drain bound; this only waits for it.
            let _ = writer.await;
        }
        Ok(())
    }
}

/// Removes a pending entry on drop unless disarmed.
struct Unregister<'a> {
    connection: &'a Connection,
    id: warren_protocol::RequestId,
    armed: bool,
}

impl Unregister<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.connection.unregister(self.id);
        }
    }
}

fn binding(queue: &str, exchange: &str, routing_key: &str, arguments: FieldTable) -> QueueBind {
    QueueBind {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        arguments,
    }
}

fn exchange_binding(
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: FieldTable,
) -> ExchangeBind {
    ExchangeBind {
        destination: destination.to_owned(),
        source: source.to_owned(),
        routing_key: routing_key.to_owned(),
        arguments,
    }
}

fn ack(delivery_tag: u64, multiple: bool) -> Frame {
    Frame::Ack(Ack {
        delivery_tag,
        multiple,
    })
}

fn nack(delivery_tag: u64, multiple: bool, requeue: bool, delay_ms: u64) -> Frame {
    Frame::Nack(Nack {
        delivery_tag,
        multiple,
        requeue,
        delay_ms,
    })
}

fn reject(delivery_tag: u64, requeue: bool) -> Frame {
    Frame::Reject(Reject {
        delivery_tag,
        requeue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_can_move_between_tasks() {
        send_sync::<Client>();
        send_sync::<ClientError>();
        send::<Consumer>();
        send::<PendingConfirm>();
    }

    #[test]
    fn settle_frames_carry_their_flags() {
        assert_eq!(
            nack(5, true, false, 30),
            Frame::Nack(Nack {
                delivery_tag: 5,
                multiple: true,
                requeue: false,
                delay_ms: 30
            })
        );
        assert_eq!(
            reject(6, true),
            Frame::Reject(Reject {
                delivery_tag: 6,
                requeue: true
            })
        );
        assert_eq!(
            ack(7, false),
            Frame::Ack(Ack {
                delivery_tag: 7,
                multiple: false
            })
        );
    }
}
