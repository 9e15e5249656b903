//! `warren-protocol`: Warren's binary wire protocol, with no I/O.
//!
//! The server, the client library and the fuzzers all link this crate, so the wire format is
//! defined in exactly one place. `PROTOCOL.md` beside this crate is the normative spec; the
//! code and the spec change together.
//!
//! # Wire format
//!
//! A connection opens with the client's 8-byte preface (`WARREN` + `u16` LE version, see
//! [`handshake`]); the server answers with a `Hello` frame. From then on both sides exchange
//! frames, all integers little-endian:
//!
//! ```text
//! +----------------+-----------+-----------------+----------------------+
//! | length: u32 LE | opcode:u8 | request_id: u64 | payload (per opcode) |
//! +----------------+-----------+-----------------+----------------------+
//! ```
//!
//! `length` counts the bytes after it. Replies echo the request id of their request, so a
//! client may pipeline any number of requests. There are no channels: one connection is one
//! session.
//!
//! # Modules
//! - [`handshake`]: preface and version check.
//! - [`frame`]: [`Frame`], [`Opcode`] and every payload layout.
//! - [`properties`], [`headers`] and [`field_table`]: message properties, the headers kept
//!   encoded, and typed header values.
//! - [`codec`]: [`FrameCodec`], the `tokio-util` codec with a max frame size.
//! - [`error`]: [`DecodeError`] and the numeric [`ErrorCode`]s.
//! - [`read`] and [`write`](mod@write): checked primitive readers and writers.
//! - `fuzzing` (tests and the `fuzzing` feature only): the checks the fuzz targets run.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod field_table;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod handshake;
pub mod headers;
pub mod properties;
pub mod read;
pub mod write;

pub use codec::{FrameCodec, DEFAULT_MAX_FRAME_SIZE_BYTES, PUBLISH_HEADROOM_BYTES};
pub use error::{DecodeError, ErrorCode};
pub use field_table::{FieldTable, FieldValue, MAX_ARGUMENT_TABLE_BYTES, MAX_FIELD_DEPTH};
pub use frame::*;
pub use handshake::{client_preface, parse_client_preface, MAGIC, PROTOCOL_VERSION};
pub use headers::Headers;
pub use properties::Properties;
