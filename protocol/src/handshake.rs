//! The connection preface. A client opens with 8 bytes, `WARREN` followed by the protocol
//! version it speaks (`u16` LE). The server answers with a [`crate::Frame::Hello`] carrying the
//! version and its limits, or with an [`crate::Frame::Error`] (`UNSUPPORTED_VERSION` or
//! `FRAME_ERROR`) and closes.

use crate::error::DecodeError;

/// The six magic bytes a client starts with.
pub const MAGIC: [u8; 6] = *b"WARREN";

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u16 = 1;

/// Length of the client preface in bytes.
pub const PREFACE_BYTES: usize = 8;

/// The client's preface for `version`.
pub fn client_preface(version: u16) -> [u8; PREFACE_BYTES] {
    let v = version.to_le_bytes();
    let [m0, m1, m2, m3, m4, m5] = MAGIC;
    [m0, m1, m2, m3, m4, m5, v[0], v[1]]
}

/// Reads a client preface and returns the version it asks for.
///
/// # Errors
/// [`DecodeError::BadMagic`] when the bytes are not Warren's magic.
pub fn parse_client_preface(bytes: [u8; PREFACE_BYTES]) -> Result<u16, DecodeError> {
    let [m0, m1, m2, m3, m4, m5, v0, v1] = bytes;
    let magic = [m0, m1, m2, m3, m4, m5];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    Ok(u16::from_le_bytes([v0, v1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_roundtrips() {
        assert_eq!(parse_client_preface(client_preface(7)), Ok(7));
        assert_eq!(&client_preface(1), b"WARREN\x01\x00");
    }

    #[test]
    fn wrong_magic_is_refused() {
        assert!(matches!(
            parse_client_preface(*b"GET / HT"),
            Err(DecodeError::BadMagic(_))
        ));
    }
}
