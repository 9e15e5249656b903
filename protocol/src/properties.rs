//! Message properties: the metadata a publisher attaches to a message, carried unchanged to
//! every consumer.
//!
//! On the wire: a `u16` presence mask, then each present field in bit order.

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::field_table::skip_table;
use crate::headers::Headers;
use crate::read::Reader;
use crate::write::{put_str16, str16_len};

const MESSAGE_ID: u16 = 1 << 0;
const CORRELATION_ID: u16 = 1 << 1;
const REPLY_TO: u16 = 1 << 2;
const CONTENT_TYPE: u16 = 1 << 3;
const CONTENT_ENCODING: u16 = 1 << 4;
const TIMESTAMP: u16 = 1 << 5;
const EXPIRATION: u16 = 1 << 6;
const PRIORITY: u16 = 1 << 7;
const PERSISTENT: u16 = 1 << 8;
const HEADERS: u16 = 1 << 9;
const KIND: u16 = 1 << 10;
const USER_ID: u16 = 1 << 11;
const APP_ID: u16 = 1 << 12;
const ALL: u16 = (1 << 13) - 1;

/// The properties of a message, as AMQP's `basic` class defines them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// Application-chosen message id.
    pub message_id: Option<String>,
    /// Correlates a reply with its request.
    pub correlation_id: Option<String>,
    /// Where replies should go (usually a queue name).
    pub reply_to: Option<String>,
    /// MIME type of the body.
    pub content_type: Option<String>,
    /// Encoding of the body (e.g. `gzip`).
    pub content_encoding: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Time to live in milliseconds (used by per-message TTL).
    pub expiration: Option<u64>,
    /// Priority, 0 to 255.
    pub priority: Option<u8>,
    /// Whether a durable queue keeps this message on disk (AMQP delivery mode 2).
    pub persistent: bool,
    /// Application headers; the broker adds its own (`x-death`, ...) here. Kept encoded
    /// (see [`Headers`]); build them from a [`crate::FieldTable`] with `into()`.
    pub headers: Headers,
    /// The message's type name (AMQP's `type`), for the application.
    pub kind: Option<String>,
    /// The user who published it (AMQP's `user-id`); the broker checks it is the
    /// connection's user.
    pub user_id: Option<String>,
    /// The publishing application (AMQP's `app-id`).
    pub app_id: Option<String>,
}

impl Properties {
    /// Encodes the properties.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut mask = 0u16;
        let strs = [
            (&self.message_id, MESSAGE_ID),
            (&self.correlation_id, CORRELATION_ID),
            (&self.reply_to, REPLY_TO),
            (&self.content_type, CONTENT_TYPE),
            (&self.content_encoding, CONTENT_ENCODING),
        ];
        for (v, bit) in &strs {
            if v.is_some() {
                mask |= bit;
            }
        }
        if self.timestamp.is_some() {
            mask |= TIMESTAMP;
        }
        if self.expiration.is_some() {
            mask |= EXPIRATION;
        }
        if self.priority.is_some() {
            mask |= PRIORITY;
        }
        if self.persistent {
            mask |= PERSISTENT;
        }
        if !self.headers.is_empty() {
            mask |= HEADERS;
        }
        // After the headers, so a message without them encodes as it did before they came.
        let tail = [
            (&self.kind, KIND),
            (&self.user_id, USER_ID),
            (&self.app_id, APP_ID),
        ];
        for (v, bit) in &tail {
            if v.is_some() {
                mask |= bit;
            }
        }
        dst.put_u16_le(mask);
        for (v, _) in strs {
            if let Some(s) = v {
                put_str16(dst, s);
            }
        }
        if let Some(t) = self.timestamp {
            dst.put_u64_le(t);
        }
        if let Some(e) = self.expiration {
            dst.put_u64_le(e);
        }
        if let Some(p) = self.priority {
            dst.put_u8(p);
        }
        if !self.headers.is_empty() {
            dst.put_slice(self.headers.encoded());
        }
        for (v, _) in tail {
            if let Some(s) = v {
                put_str16(dst, s);
            }
        }
    }

    /// How many bytes [`Properties::encode`] writes, computed without writing them (a
    /// publisher sizes its frame with it before encoding).
    pub fn encoded_len(&self) -> usize {
        let strs = [
            &self.message_id,
            &self.correlation_id,
            &self.reply_to,
            &self.content_type,
            &self.content_encoding,
            &self.kind,
            &self.user_id,
            &self.app_id,
        ];
        let strings: usize = strs
            .iter()
            .filter_map(|v| v.as_deref())
            .map(str16_len)
            .sum();
        let numbers = 8 * usize::from(self.timestamp.is_some())
            + 8 * usize::from(self.expiration.is_some())
            + usize::from(self.priority.is_some());
        2 + strings + numbers + self.headers.encoded().len()
    }

    /// Decodes properties written by [`Properties::encode`].
    pub fn decode(r: &mut Reader) -> Result<Properties, DecodeError> {
        Self::decode_capped(r, usize::MAX).map(|(p, _)| p)
    }

    /// Decodes properties, unless their encoding (headers included) is longer than
    /// `max_bytes`: then the headers are stepped over without being built, and the size comes
    /// back with the other properties so the caller can refuse the message. A header table
    /// costs many times its wire size once decoded (a list of a million booleans is a
    /// million `FieldValue`s), so the size is known before any of it is allocated.
    ///
    /// # Errors
    /// As [`Properties::decode`]: the layout is checked even when the headers are skipped.
    pub fn decode_capped(
        r: &mut Reader,
        max_bytes: usize,
    ) -> Result<(Properties, Option<usize>), DecodeError> {
        let offset = r.offset();
        let mask = r.u16()?;
        if mask & !ALL != 0 {
            return Err(DecodeError::InvalidValue {
                field: "property mask",
                value: u64::from(mask),
                offset,
            });
        }
        let s = |bit: u16, field: &'static str, r: &mut Reader| {
            if mask & bit != 0 {
                r.str16(field).map(Some)
            } else {
                Ok(None)
            }
        };
        let message_id = s(MESSAGE_ID, "message_id", r)?;
        let correlation_id = s(CORRELATION_ID, "correlation_id", r)?;
        let reply_to = s(REPLY_TO, "reply_to", r)?;
        let content_type = s(CONTENT_TYPE, "content_type", r)?;
        let content_encoding = s(CONTENT_ENCODING, "content_encoding", r)?;
        let timestamp = if mask & TIMESTAMP != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let expiration = if mask & EXPIRATION != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let priority = if mask & PRIORITY != 0 {
            Some(r.u8()?)
        } else {
            None
        };
        let mut headers = Headers::new();
        if mask & HEADERS != 0 {
            // Measured only when the rest of the frame could hold more than the cap.
            let mut probe = None;
            if r.offset().saturating_sub(offset) + r.remaining() > max_bytes {
                let mut ahead = r.clone();
                skip_table(&mut ahead)?;
                if ahead.offset().saturating_sub(offset) > max_bytes {
                    probe = Some(ahead);
                }
            }
            match probe {
                Some(past_headers) => *r = past_headers,
                None => headers = Headers::decode(r)?,
            }
        }
        let kind = s(KIND, "type", r)?;
        let user_id = s(USER_ID, "user_id", r)?;
        let app_id = s(APP_ID, "app_id", r)?;
        let size = r.offset().saturating_sub(offset);
        let properties = Properties {
            kind,
            user_id,
            app_id,
            message_id,
            correlation_id,
            reply_to,
            content_type,
            content_encoding,
            timestamp,
            expiration,
            priority,
            persistent: mask & PERSISTENT != 0,
            headers,
        };
        Ok((properties, (size > max_bytes).then_some(size)))
    }
}
