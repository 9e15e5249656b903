//! Writers for the primitive field types, the mirror of [`crate::read`].

use bytes::{BufMut, BytesMut};

/// Writes a `u16`-length-prefixed string. Strings longer than `u16::MAX` bytes are cut at a
/// character boundary: every name the protocol carries is limited far below that, and callers
/// validate lengths before encoding.
pub fn put_str16(dst: &mut BytesMut, s: &str) {
    let s = truncate_utf8(s, usize::from(u16::MAX));
    dst.put_u16_le(u16::try_from(s.len()).unwrap_or(u16::MAX));
    dst.put_slice(s.as_bytes());
}

/// Writes a `u32`-length-prefixed string.
pub fn put_str32(dst: &mut BytesMut, s: &str) {
    put_bytes32(dst, s.as_bytes());
}

/// Writes a `u32`-length-prefixed byte string.
pub fn put_bytes32(dst: &mut BytesMut, b: &[u8]) {
    let b = b.get(..b.len().min(u32::MAX as usize)).unwrap_or(b);
    dst.put_u32_le(u32::try_from(b.len()).unwrap_or(u32::MAX));
    dst.put_slice(b);
}

/// Writes a boolean as one byte.
pub fn put_bool(dst: &mut BytesMut, v: bool) {
    dst.put_u8(u8::from(v));
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or("")
}

/// Length in bytes of a `u16`-prefixed string as written by [`put_str16`].
pub fn str16_len(s: &str) -> usize {
    2 + truncate_utf8(s, usize::from(u16::MAX)).len()
}
