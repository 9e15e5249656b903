//! Checked readers over a frame's bytes: every read checks what is left first, so a short or
//! hostile frame yields a [`DecodeError`], never a panic or an allocation past the frame.

use bytes::{Buf, Bytes};

use crate::error::DecodeError;

/// A cursor over one frame's payload. Slices it hands out share the frame's buffer. Cloning
/// is cheap (a reference count), so a decoder can measure ahead without consuming.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    start_len: usize,
    /// The size of an argument table stepped over for being over
    /// [`crate::MAX_ARGUMENT_TABLE_BYTES`] (see [`crate::field_table::read_arguments`]).
    oversized_table: Option<usize>,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        let start_len = buf.len();
        Reader {
            buf,
            start_len,
            oversized_table: None,
        }
    }

    /// Bytes consumed so far; used in error offsets.
    pub fn offset(&self) -> usize {
        self.start_len.saturating_sub(self.buf.len())
    }

    /// The encoded size of an argument table this reader stepped over instead of building,
    /// for being over [`crate::MAX_ARGUMENT_TABLE_BYTES`].
    pub fn oversized_table(&self) -> Option<usize> {
        self.oversized_table
    }

    pub(crate) fn note_oversized_table(&mut self, size: usize) {
        self.oversized_table = Some(size);
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEof {
                offset: self.offset(),
                need: n,
                have: self.buf.len(),
            });
        }
        Ok(())
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16_le())
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }

    /// Reads an `i8`.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    /// Reads a little-endian `i16`.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_i16_le())
    }

    /// Reads a little-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32_le())
    }

    /// Reads a little-endian IEEE-754 `f32`.
    pub fn f32(&mut self) -> Result<f32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_f32_le())
    }

    /// Reads a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_i64_le())
    }

    /// Reads a little-endian IEEE-754 `f64`.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_f64_le())
    }

    /// Reads `n` bytes without copying them.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Steps over `n` bytes (cheaper than [`Reader::bytes`]: no shared handle is made).
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.need(n)?;
        self.buf.advance(n);
        Ok(())
    }

    /// Reads a `u32`-length-prefixed byte string.
    pub fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// Reads a `u16`-length-prefixed UTF-8 string (names, keys, short texts).
    pub fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        self.utf8(n, field)
    }

    /// Reads a `u32`-length-prefixed UTF-8 string (header string values).
    pub fn str32(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        self.utf8(n, field)
    }

    fn utf8(&mut self, n: usize, field: &'static str) -> Result<String, DecodeError> {
        let offset = self.offset();
        let raw = self.bytes(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field, offset })
    }

    /// As [`Reader::str16`], checking the UTF-8 without copying; returns where the string's
    /// bytes start (an offset, as [`Reader::offset`]) and how many there are.
    pub fn skip_str16(&mut self, field: &'static str) -> Result<(usize, usize), DecodeError> {
        let n = self.u16()? as usize;
        self.skip_utf8(n, field)
    }

    /// As [`Reader::str32`], checking the UTF-8 without copying.
    pub fn skip_str32(&mut self, field: &'static str) -> Result<(), DecodeError> {
        let n = self.u32()? as usize;
        self.skip_utf8(n, field).map(|_| ())
    }

    fn skip_utf8(&mut self, n: usize, field: &'static str) -> Result<(usize, usize), DecodeError> {
        let offset = self.offset();
        self.need(n)?;
        let valid = self
            .buf
            .get(..n)
            .is_some_and(|raw| std::str::from_utf8(raw).is_ok());
        if !valid {
            return Err(DecodeError::InvalidUtf8 { field, offset });
        }
        self.buf.advance(n);
        Ok((offset, n))
    }

    /// The bytes not read yet, borrowed.
    pub fn remaining_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Reads a boolean byte, which must be 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let offset = self.offset();
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field,
                value: u64::from(v),
                offset,
            }),
        }
    }

    /// Reads a flags byte and checks that no bit outside `allowed` is set.
    pub fn flags(&mut self, field: &'static str, allowed: u8) -> Result<u8, DecodeError> {
        let offset = self.offset();
        let v = self.u8()?;
        if v & !allowed != 0 {
            return Err(DecodeError::InvalidValue {
                field,
                value: u64::from(v),
                offset,
            });
        }
        Ok(v)
    }

    /// Takes everything that is left (message bodies are the last field of their frames).
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails if any bytes are left: frames have an exact layout.
    pub fn finish(self, opcode: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                opcode,
                extra: self.buf.len(),
            })
        }
    }
}
