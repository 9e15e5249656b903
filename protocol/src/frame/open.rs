//! The frame that opens a connection for use: `Open` (0x07), with its layout. The server
//! answers it with `Ok`, or with `Error 403 ACCESS_REFUSED` / `404 NOT_FOUND` and closes.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::Payload;
use crate::error::DecodeError;
use crate::read::Reader;
use crate::write::{put_bytes32, put_str16};

/// How an [`Open`] proves who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mechanism {
    /// `user` and `password` in the frame (AMQP's PLAIN).
    Password = 0,
    /// The identity comes from outside the frame, such as a TLS client certificate (AMQP's
    /// EXTERNAL). Reserved: a server that cannot establish it refuses the `Open`.
    External = 1,
}

/// Client → server, once, right after `Hello`: who the client is and which virtual host it
/// works in. No other frame is accepted before it.
#[derive(Clone, PartialEq)]
pub struct Open {
    /// How the client authenticates.
    pub mechanism: Mechanism,
    /// User name.
    pub user: String,
    /// Password, raw bytes (UTF-8 by convention).
    pub password: Bytes,
    /// Virtual host to open, e.g. `/`.
    pub vhost: String,
}

// Not derived: a password must never reach a log line through `{:?}`.
impl fmt::Debug for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Open")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("vhost", &self.vhost)
            .finish()
    }
}

impl Payload for Open {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.mechanism as u8);
        put_str16(dst, &self.user);
        put_bytes32(dst, &self.password);
        put_str16(dst, &self.vhost);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let mechanism = match r.u8()? {
            0 => Mechanism::Password,
            1 => Mechanism::External,
            v => {
                return Err(DecodeError::InvalidValue {
                    field: "mechanism",
                    value: u64::from(v),
                    offset,
                })
            }
        };
        Ok(Open {
            mechanism,
            user: r.str16("user")?,
            password: r.bytes32()?,
            vhost: r.str16("vhost")?,
        })
    }
}
