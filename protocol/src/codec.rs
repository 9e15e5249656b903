//! [`FrameCodec`]: the `tokio-util` codec that cuts a byte stream into [`Envelope`]s and back.
//!
//! The length prefix is checked against the maximum frame size before anything is buffered
//! for the frame, so a hostile length cannot make the reader allocate. Within the maximum, the
//! buffer grows with the bytes that actually arrive, never with what the prefix claims: a
//! client that announces 8 MiB and sends ten bytes costs ten bytes (plus one read chunk).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::DecodeError;
use crate::frame::{Envelope, Oversized, FRAME_HEADER_BYTES};

/// The default and largest-by-default frame size: 8 MiB, as `LengthDelimitedCodec`'s.
pub const DEFAULT_MAX_FRAME_SIZE_BYTES: u32 = 8 * 1024 * 1024;

/// Bytes a server-built frame (a delivery) may add to the publish it came from. A publish
/// frame may therefore be at most `max_frame_size - PUBLISH_HEADROOM_BYTES` long, so every
/// frame derived from it still fits.
pub const PUBLISH_HEADROOM_BYTES: u32 = 1024;

const LENGTH_PREFIX_BYTES: usize = 4;

/// Most the decoder reserves ahead of the bytes that have arrived, for a frame still arriving.
/// Enough for a large read to land in one go; `BytesMut` doubles when it grows, so a big frame
/// still costs only a few reallocations.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Frames on a byte stream: `u32` LE length, then opcode, request id and payload.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_size: u32,
    last_frame_len: u32,
    max_header_bytes: Option<u32>,
    last_oversized_header: Option<usize>,
    last_oversized_arguments: Option<usize>,
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_frame_size` (the length prefix's value).
    pub fn new(max_frame_size: u32) -> Self {
        FrameCodec {
            max_frame_size,
            last_frame_len: 0,
            max_header_bytes: None,
            last_oversized_header: None,
            last_oversized_arguments: None,
        }
    }

    /// Caps a publish's encoded properties, headers included (the server's
    /// `--max-header-bytes`). A publish over the cap still decodes, so the connection can go
    /// on, but without its headers, which are never built:
    /// [`FrameCodec::last_oversized_header`] says so and the server refuses the message.
    /// Argument tables over [`crate::MAX_ARGUMENT_TABLE_BYTES`] are likewise stepped over
    /// ([`FrameCodec::last_oversized_arguments`]); without this a decode error ends the stream.
    pub fn with_max_header_bytes(mut self, max: u32) -> Self {
        self.max_header_bytes = Some(max);
        self
    }

    /// The size of the last decoded frame's properties when it was a publish over the header
    /// cap (its headers were dropped); `None` otherwise.
    pub fn last_oversized_header(&self) -> Option<usize> {
        self.last_oversized_header
    }

    /// The size of the last decoded frame's argument table when it was over
    /// [`crate::MAX_ARGUMENT_TABLE_BYTES`] (the frame came with empty arguments); `None`
    /// otherwise.
    pub fn last_oversized_arguments(&self) -> Option<usize> {
        self.last_oversized_arguments
    }

    /// The `length` of the frame decoded last (the server checks a publish against the
    /// publish headroom with it).
    pub fn last_frame_len(&self) -> u32 {
        self.last_frame_len
    }

    /// The maximum in force.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Changes the maximum (after the handshake told the client the server's).
    pub fn set_max_frame_size(&mut self, max: u32) {
        self.max_frame_size = max;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_SIZE_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Envelope;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, DecodeError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; LENGTH_PREFIX_BYTES];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_le_bytes(len_bytes);
        if len > self.max_frame_size {
            return Err(DecodeError::FrameTooLarge {
                size: u64::from(len),
                max: u64::from(self.max_frame_size),
            });
        }
        let len_u32 = len;
        let len = len as usize;
        if len < FRAME_HEADER_BYTES {
            return Err(DecodeError::FrameTooShort {
                size: len as u64,
                min: FRAME_HEADER_BYTES as u64,
            });
        }
        let total = LENGTH_PREFIX_BYTES + len;
        if src.len() < total {
            // Never what the prefix claims: a length costs nothing until its bytes arrive.
            src.reserve((total - src.len()).min(READ_CHUNK_BYTES));
            return Ok(None);
        }
        self.last_frame_len = len_u32;
        let mut frame = src.split_to(total);
        frame.advance(LENGTH_PREFIX_BYTES);
        let Some(max_header) = self.max_header_bytes else {
            return Envelope::decode(frame.freeze()).map(Some);
        };
        let (envelope, oversized) = Envelope::decode_capped(frame.freeze(), max_header as usize)?;
        self.last_oversized_header = None;
        self.last_oversized_arguments = None;
        match oversized {
            Some(Oversized::Properties(size)) => self.last_oversized_header = Some(size),
            Some(Oversized::Arguments(size)) => self.last_oversized_arguments = Some(size),
            None => {}
        }
        Ok(Some(envelope))
    }
}

impl Encoder<Envelope> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Envelope, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<crate::frame::DeliverRef<'_>> for FrameCodec {
    type Error = std::io::Error;

    fn encode(
        &mut self,
        item: crate::frame::DeliverRef<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), std::io::Error> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Envelope, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use bytes::BufMut;

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32_le(u32::MAX);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "frame length 4294967295 exceeds max 1024");
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn a_claimed_length_reserves_only_a_chunk() {
        // Regression: a prefix claiming 8 MiB used to reserve 8 MiB at once, so stalled
        // partial frames held their full claimed size each.
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32_le(DEFAULT_MAX_FRAME_SIZE_BYTES);
        buf.put_slice(&[0x30; 10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 14 + READ_CHUNK_BYTES,
            "capacity {}",
            buf.capacity()
        );
    }

    #[test]
    fn a_large_frame_arriving_in_pieces_decodes_and_grows_by_doubling() {
        let body = bytes::Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        let publish = crate::frame::Publish {
            exchange: String::new(),
            routing_key: "q".into(),
            mandatory: false,
            no_confirm: false,
            properties: crate::Properties::default(),
            body,
        };
        let env = Envelope::new(3, Frame::Publish(Box::new(publish)));
        let bytes = env.to_bytes();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut reallocations = 0;
        let mut decoded = None;
        for piece in bytes.chunks(16 * 1024) {
            // As FramedRead does: fill what is reserved, then ask the codec.
            let cap = buf.capacity();
            buf.reserve(piece.len());
            if buf.capacity() != cap {
                reallocations += 1;
            }
            buf.put_slice(piece);
            if let Some(e) = codec.decode(&mut buf).unwrap() {
                decoded = Some(e);
            }
        }
        assert_eq!(decoded, Some(env));
        assert!(reallocations < 20, "{reallocations} reallocations");
    }

    #[test]
    fn a_header_bomb_is_measured_not_built() {
        let mut headers = crate::FieldTable::new();
        headers.insert(
            "bomb".into(),
            crate::FieldValue::List(vec![crate::FieldValue::Bool(true); 100_000]),
        );
        headers.insert("small".into(), crate::FieldValue::Int(1));
        let publish = crate::frame::Publish {
            exchange: String::new(),
            routing_key: "q".into(),
            mandatory: false,
            no_confirm: false,
            properties: crate::Properties {
                message_id: Some("m".into()),
                headers: headers.into(),
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"body"),
        };
        let bytes = Envelope::new(5, Frame::Publish(Box::new(publish.clone()))).to_bytes();
        // Over the cap: headers dropped, the rest intact, the size reported.
        let mut codec = FrameCodec::default().with_max_header_bytes(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        let env = codec.decode(&mut buf).unwrap().unwrap();
        let size = codec.last_oversized_header().expect("over the cap");
        assert!(size > 200_000, "{size}");
        let Frame::Publish(got) = env.frame else {
            panic!("not a publish")
        };
        assert!(got.properties.headers.is_empty());
        assert_eq!(got.properties.message_id.as_deref(), Some("m"));
        assert_eq!(&got.body[..], b"body");
        assert_eq!(env.request_id, 5);
        // Under the cap: decoded as ever, and the flag cleared.
        let mut codec = codec.with_max_header_bytes(1 << 20);
        let mut buf = BytesMut::from(&bytes[..]);
        let env = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(codec.last_oversized_header(), None);
        assert_eq!(env.frame, Frame::Publish(Box::new(publish)));
    }

    #[test]
    fn an_oversized_argument_table_is_measured_not_built() {
        let mut arguments = crate::FieldTable::new();
        arguments.insert(
            "x-many".into(),
            crate::FieldValue::List(vec![crate::FieldValue::Bool(true); 40_000]),
        );
        let declare = crate::frame::QueueDeclare {
            name: "q".into(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            passive: false,
            arguments,
        };
        let bytes = Envelope::new(9, Frame::QueueDeclare(declare.clone())).to_bytes();
        // The server's codec: the frame with empty arguments, and the table's size.
        let mut codec = FrameCodec::default().with_max_header_bytes(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        let env = codec.decode(&mut buf).unwrap().unwrap();
        let size = codec.last_oversized_arguments().expect("over the cap");
        assert_eq!(size, 4 + 2 + 6 + 1 + 4 + 80_000);
        assert_eq!(codec.last_oversized_header(), None);
        let Frame::QueueDeclare(got) = env.frame else {
            panic!("not a declare")
        };
        assert!(got.arguments.is_empty());
        assert_eq!((got.name.as_str(), got.durable), ("q", true));
        assert_eq!(env.request_id, 9);
        // The next frame clears it.
        let small = crate::frame::QueueDeclare {
            arguments: crate::FieldTable::new(),
            ..declare
        };
        let mut buf = BytesMut::from(&Envelope::new(10, Frame::QueueDeclare(small)).to_bytes()[..]);
        codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(codec.last_oversized_arguments(), None);
        // String contents do not count: a table that is one long string decodes as ever.
        let mut long = crate::FieldTable::new();
        long.insert("doc".into(), crate::FieldValue::String("d".repeat(200_000)));
        let admin = Frame::Admin(crate::frame::Admin {
            command: "definitions.import".into(),
            arguments: long,
        });
        let mut buf = BytesMut::from(&Envelope::new(11, admin.clone()).to_bytes()[..]);
        let env = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(codec.last_oversized_arguments(), None);
        assert_eq!(env.frame, admin);
        // A plain decoder refuses it outright: it never builds the table either.
        let mut plain = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            plain.decode(&mut buf).unwrap_err(),
            DecodeError::ArgumentsTooLarge {
                size,
                max: crate::MAX_ARGUMENT_TABLE_BYTES
            }
        );
    }

    #[test]
    fn a_borrowed_delivery_encodes_like_the_frame() {
        let d = crate::frame::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: 7,
            redelivered: true,
            delivery_count: 2,
            acquired_count: 3,
            stream_offset: Some(9),
            exchange: "ex".into(),
            routing_key: "k".into(),
            properties: crate::Properties {
                message_id: Some("m".into()),
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"body"),
        };
        let owned = Envelope::new(0, Frame::Deliver(Box::new(d.clone()))).to_bytes();
        let mut borrowed = BytesMut::new();
        crate::frame::DeliverRef {
            consumer_tag: &d.consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
            acquired_count: d.acquired_count,
            stream_offset: d.stream_offset,
            exchange: &d.exchange,
            routing_key: &d.routing_key,
            properties: &d.properties,
            body: &d.body,
        }
        .encode(&mut borrowed);
        assert_eq!(&owned[..], &borrowed[..]);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut codec = FrameCodec::default();
        let bytes = Envelope::new(9, Frame::Heartbeat).to_bytes();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(out.is_none());
            } else {
                assert_eq!(out, Some(Envelope::new(9, Frame::Heartbeat)));
            }
        }
    }
}
