//! [`BrokerError`]: why a broker operation failed, and the wire [`ErrorCode`] each cause maps to.

use thiserror::Error;
use warren_protocol::ErrorCode;

use crate::store::StoreError;

/// Why a broker operation failed. Each variant answers one request; the connection goes on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The named entity does not exist.
    #[error("no {kind} '{name}'")]
    NotFound {
        /// `exchange`, `queue`, `consumer`, ...
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The request conflicts with existing state.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The client may not do this (reserved names, the default exchange).
    #[error("{0}")]
    AccessRefused(String),
    /// The queue is exclusive to another connection, or has an exclusive consumer.
    #[error("{0}")]
    ResourceLocked(String),
    /// A field has a value that is not allowed (a name, an admin argument, a header Warren
    /// reads). Arguments of queues, exchanges, consumers and bindings are refused with
    /// [`BrokerError::PreconditionFailed`] instead, as RabbitMQ does.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which field or argument.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The publish frame is larger than the server accepts.
    #[error("{}", too_large_message(*body, *size, *max))]
    ContentTooLarge {
        /// The message body's size.
        body: usize,
        /// Frame size.
        size: usize,
        /// The limit: the max frame size less the publish headroom.
        max: usize,
    },
    /// A publish whose encoded properties (headers included) exceed the server's header cap.
    #[error(
        "message properties of {} bytes (headers included) exceed the server's limit of {}; \
         start the server with --max-header-bytes to raise it",
        thousands(*size),
        thousands(*max)
    )]
    HeadersTooLarge {
        /// The encoded size of the publish's properties.
        size: usize,
        /// The limit (`--max-header-bytes`).
        max: usize,
    },
    /// A request whose argument table (queue, exchange, binding, consume or admin arguments)
    /// is longer than [`warren_protocol::MAX_ARGUMENT_TABLE_BYTES`].
    #[error(
        "argument table of {} bytes (string and byte contents not counted) exceeds the \
         server's limit of {}",
        thousands(*size),
        thousands(*max)
    )]
    ArgumentsTooLarge {
        /// The table's encoded size, less its string and byte contents.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The operation is not valid in this state (e.g. unexpected frame type).
    #[error("{0}")]
    CommandInvalid(String),
    /// A result too large to send in one frame.
    #[error("{0}")]
    ResultTooLarge(String),
    /// A frame only the server may send arrived from a client.
    #[error("{0}")]
    UnexpectedFrame(String),
    /// Not allowed by the server's rules (e.g. a consumer tag already in use).
    #[error("{0}")]
    NotAllowed(String),
    /// Not implemented by this server version.
    #[error("{0}")]
    NotImplemented(String),
    /// The store failed; the operation did not take effect durably.
    ///
    /// The store error is printed in the message, not exposed as the `source`, so a `{:#}`
    /// chain does not print it twice.
    #[error("storage failure: {0}")]
    Store(StoreError),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        BrokerError::Store(e)
    }
}

impl BrokerError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::NotFound { .. } => ErrorCode::NotFound,
            BrokerError::PreconditionFailed(_) => ErrorCode::PreconditionFailed,
            BrokerError::AccessRefused(_) => ErrorCode::AccessRefused,
            BrokerError::ResourceLocked(_) => ErrorCode::ResourceLocked,
            BrokerError::InvalidArgument { .. } => ErrorCode::SyntaxError,
            BrokerError::ContentTooLarge { .. }
            | BrokerError::HeadersTooLarge { .. }
            | BrokerError::ArgumentsTooLarge { .. }
            | BrokerError::ResultTooLarge(_) => ErrorCode::ContentTooLarge,
            BrokerError::CommandInvalid(_) => ErrorCode::CommandInvalid,
            BrokerError::NotImplemented(_) => ErrorCode::NotImplemented,
            BrokerError::UnexpectedFrame(_) => ErrorCode::UnexpectedFrame,
            BrokerError::NotAllowed(_) => ErrorCode::NotAllowed,
            BrokerError::Store(_) | BrokerError::ShuttingDown => ErrorCode::InternalError,
        }
    }

    pub(crate) fn not_found(kind: &'static str, name: &str) -> Self {
        BrokerError::NotFound {
            kind,
            name: crate::clip::name(name).into_owned(),
        }
    }

    /// An argument (of a queue, exchange, consumer or binding) refused for its value, in
    /// RabbitMQ's words and with its code, `406 PRECONDITION_FAILED`:
    /// `invalid arg 'x-message-ttl' for queue 'work': <reason>` (RabbitMQ adds the vhost).
    /// `of` is what the argument belongs to, e.g. `queue 'work'`.
    pub(crate) fn invalid_arg(arg: &str, of: impl std::fmt::Display, reason: &str) -> Self {
        BrokerError::PreconditionFailed(format!("invalid arg '{arg}' for {of}: {reason}"))
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        BrokerError::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Why a publish is too large, for the client that knows the limit from `Hello` and for the
/// server that refuses it alike: the body's size when the body alone is over the limit,
/// otherwise what the routing key, headers and properties add to it; with the fix.
pub fn too_large_message(body: usize, frame: usize, limit: usize) -> String {
    let what = if body > limit {
        format!("message body of {} bytes", thousands(body))
    } else {
        format!(
            "message of {} bytes (a body of {} bytes plus {} bytes of exchange, routing key \
             and properties)",
            thousands(frame),
            thousands(body),
            thousands(frame.saturating_sub(body))
        )
    };
    format!(
        "{what} exceeds the server's limit of {}; start the server with --max-frame-size to \
         raise it",
        thousands(limit)
    )
}

/// `20000000` as `20,000,000`: sizes users compare with the limit at a glance.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(8_387_584), "8,387,584");
        assert_eq!(thousands(20_000_000), "20,000,000");
    }

    #[test]
    fn too_large_names_the_body_or_what_is_added_to_it() {
        assert_eq!(
            too_large_message(20_000_000, 20_000_040, 8_387_584),
            "message body of 20,000,000 bytes exceeds the server's limit of 8,387,584; start \
             the server with --max-frame-size to raise it"
        );
        assert_eq!(
            too_large_message(3_000, 3_100, 3_072),
            "message of 3,100 bytes (a body of 3,000 bytes plus 100 bytes of exchange, routing \
             key and properties) exceeds the server's limit of 3,072; start the server with \
             --max-frame-size to raise it"
        );
    }

    #[test]
    fn store_errors_print_once_along_the_chain() {
        let e = BrokerError::from(StoreError::DataDir {
            path: "/data".into(),
            reason: "not a directory".into(),
        });
        assert_eq!(
            e.to_string(),
            "storage failure: data directory /data: not a directory"
        );
        assert!(std::error::Error::source(&e).is_none());
        let chain = format!("{:#}", anyhow::Error::new(e).context("starting"));
        assert_eq!(
            chain,
            "starting: storage failure: data directory /data: not a directory"
        );
    }
}
