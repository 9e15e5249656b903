//! Errors of the wire format: what went wrong while decoding, and the numeric error codes
//! that travel in `Error`, `Close`, `Return`, `Confirm` and `ConsumerCancelled` frames.

use thiserror::Error;

/// Why a frame (or the handshake) could not be decoded.
///
/// Every variant says where and with what value, so the error frame the server sends back
/// names the problem precisely.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ended before a field did.
    #[error("frame truncated at byte {offset}: need {need} more bytes, have {have}")]
    UnexpectedEof {
        /// Offset of the field inside the frame payload.
        offset: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// The length prefix announces a frame larger than the negotiated maximum.
    #[error("frame length {size} exceeds max {max}")]
    FrameTooLarge {
        /// The announced length.
        size: u64,
        /// The maximum in force.
        max: u64,
    },
    /// The length prefix is smaller than the fixed frame header.
    #[error("frame length {size} is shorter than the {min}-byte frame header")]
    FrameTooShort {
        /// The announced length.
        size: u64,
        /// The smallest valid length.
        min: u64,
    },
    /// The opcode byte names no operation of this protocol version.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// An enumerated field holds a value with no meaning.
    #[error("invalid {field} value {value} at byte {offset}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// Offset inside the frame payload.
        offset: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("{field} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
        /// Offset inside the frame payload.
        offset: usize,
    },
    /// A frame had bytes left over after its last field.
    #[error("{extra} unexpected trailing bytes after a {opcode} frame")]
    TrailingBytes {
        /// Name of the frame type.
        opcode: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// Header values nest deeper than [`crate::MAX_FIELD_DEPTH`].
    #[error("header values nest deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A request's argument table is longer than [`crate::MAX_ARGUMENT_TABLE_BYTES`] (a
    /// server reading with [`crate::FrameCodec::with_max_header_bytes`] refuses the request
    /// instead and keeps the connection).
    #[error("argument table of {size} bytes (string and byte contents not counted) exceeds the limit of {max}")]
    ArgumentsTooLarge {
        /// The table's encoded size, less its string and byte contents.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The connection did not start with Warren's magic bytes.
    #[error("bad magic bytes {0:02x?}: not a Warren client")]
    BadMagic([u8; 6]),
    /// An I/O error while reading frames (only produced by the codec).
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        DecodeError::Io(e.to_string())
    }
}

/// A numeric error code, carried in error-bearing frames.
///
/// Where a meaning matches AMQP 0-9-1 the number is AMQP's, because RabbitMQ users know them.
/// A code is never reused for another meaning: a retired code stays retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The message is larger than the server accepts.
    ContentTooLarge = 311,
    /// The server closed the connection on an operator's order (its user or virtual host
    /// was deleted); in `Close`.
    ConnectionForced = 320,
    /// A mandatory message could not be routed to any queue.
    NoRoute = 312,
    /// The client may not do this.
    AccessRefused = 403,
    /// The named exchange, queue, consumer or delivery does not exist.
    NotFound = 404,
    /// The queue is exclusive to another connection.
    ResourceLocked = 405,
    /// The request conflicts with the current state (e.g. redeclared with other attributes).
    PreconditionFailed = 406,
    /// A frame could not be decoded.
    FrameError = 501,
    /// A field has a value that is not allowed (bad name, bad argument).
    SyntaxError = 502,
    /// The operation is not valid here (e.g. deleting the default exchange).
    CommandInvalid = 503,
    /// A frame arrived that the receiver did not expect at this point.
    UnexpectedFrame = 505,
    /// The server lacks a resource to do this (a limit was reached).
    ResourceError = 506,
    /// Not allowed by the server's rules.
    NotAllowed = 530,
    /// Not implemented by this server.
    NotImplemented = 540,
    /// The server failed internally; the request may be retried.
    InternalError = 541,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion = 550,
    /// The peer stopped sending heartbeats.
    HeartbeatTimeout = 551,
    /// The connection closed normally.
    Normal = 200,
}

impl ErrorCode {
    /// All defined codes, for lookups and tests.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Normal,
        ErrorCode::ContentTooLarge,
        ErrorCode::ConnectionForced,
        ErrorCode::NoRoute,
        ErrorCode::AccessRefused,
        ErrorCode::NotFound,
        ErrorCode::ResourceLocked,
        ErrorCode::PreconditionFailed,
        ErrorCode::FrameError,
        ErrorCode::SyntaxError,
        ErrorCode::CommandInvalid,
        ErrorCode::UnexpectedFrame,
        ErrorCode::ResourceError,
        ErrorCode::NotAllowed,
        ErrorCode::NotImplemented,
        ErrorCode::InternalError,
        ErrorCode::UnsupportedVersion,
        ErrorCode::HeartbeatTimeout,
    ];

    /// The code as sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, if it is one this version defines.
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_u16() == value)
    }

    /// A short upper-case name, as AMQP spells it (`NOT_FOUND`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Normal => "NORMAL",
            ErrorCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ErrorCode::ConnectionForced => "CONNECTION_FORCED",
            ErrorCode::NoRoute => "NO_ROUTE",
            ErrorCode::AccessRefused => "ACCESS_REFUSED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ResourceLocked => "RESOURCE_LOCKED",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::FrameError => "FRAME_ERROR",
            ErrorCode::SyntaxError => "SYNTAX_ERROR",
            ErrorCode::CommandInvalid => "COMMAND_INVALID",
            ErrorCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ErrorCode::ResourceError => "RESOURCE_ERROR",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::HeartbeatTimeout => "HEARTBEAT_TIMEOUT",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.as_u16(), self.name())
    }
}
