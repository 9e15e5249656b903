//! Connection frames: `Hello` (0x01), `Close` (0x03) and `Error` (0x05), each with its layout.
//!
//! `Heartbeat` (0x02), `CloseOk` (0x04) and `Ok` (0x06) have no payload and no struct; they
//! are plain [`Frame`](super::Frame) variants.

use bytes::{BufMut, BytesMut};

use super::Payload;
use crate::error::{DecodeError, ErrorCode};
use crate::read::Reader;
use crate::write::put_str16;

/// Server → client, right after the handshake: what the server speaks and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Protocol version the server will speak on this connection.
    pub version: u16,
    /// Largest frame (length prefix value) either side may send.
    pub max_frame_size: u32,
    /// Heartbeat interval in milliseconds (0 = heartbeats off).
    pub heartbeat_ms: u32,
    /// Server software and version, for logs.
    pub server: String,
}

impl Payload for Hello {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16_le(self.version);
        dst.put_u32_le(self.max_frame_size);
        dst.put_u32_le(self.heartbeat_ms);
        put_str16(dst, &self.server);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Hello {
            version: r.u16()?,
            max_frame_size: r.u32()?,
            heartbeat_ms: r.u32()?,
            server: r.str16("server")?,
        })
    }
}

/// Either side: closing the connection, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    /// [`ErrorCode`] as a number (200 for a normal close).
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
}

impl Payload for Close {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16_le(self.code);
        put_str16(dst, &self.reason);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Close {
            code: r.u16()?,
            reason: r.str16("reason")?,
        })
    }
}

/// Server → client: the request with this frame's request id failed (or, with id 0, the
/// connection failed and is about to close).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFrame {
    /// [`ErrorCode`] as a number.
    pub code: u16,
    /// What was wrong, with the offending value.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            code: code.as_u16(),
            message: message.into(),
        }
    }
}

impl Payload for ErrorFrame {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16_le(self.code);
        put_str16(dst, &self.message);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ErrorFrame {
            code: r.u16()?,
            message: r.str16("message")?,
        })
    }
}
