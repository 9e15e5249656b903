//! Warren: a message broker with RabbitMQ's model — exchanges, bindings, queues, per-consumer
//! acks, redelivery — on a compact binary protocol (`warren-protocol`) and a redb store.
//!
//! # Layout
//! - [`server`]: the accept loop; [`connection`]: one task pair per client, frames in and out.
//! - [`amqp`]: the AMQP 0-9-1 front door (`serve --amqp-listen`) on the same broker.
//! - [`broker`]: exchanges, queues, consumers, sessions — everything that routes and delivers.
//! - [`store`]: redb behind a group-commit writer thread; recovery at startup.
//! - [`message`]: the message types shared by the broker and the store.
//! - [`metrics`]: Prometheus exposition on `GET /metrics` (`warren serve --metrics-listen`).
//! - [`client`]: the async client library the CLI and the tests use.
//! - [`tls`]: rustls configuration for the server's TLS listener and for clients.
//! - [`auth`]: password hashing (argon2id) for users.
//! - [`admin_types`]: the admin commands' results, built by the broker, read by the client.
//! - [`cli`]: the `warren` command line.

pub mod admin_types;
pub mod amqp;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clip;
pub mod clock;
pub mod connection;
pub mod daemon;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod json;
pub mod log_throttle;
pub mod message;
pub mod metrics;
pub mod server;
pub mod stop;
pub mod store;
pub mod tls;
