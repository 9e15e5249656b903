//! Typed header values: the `headers` property, queue and binding arguments.
//!
//! A [`FieldTable`] maps string keys to [`FieldValue`]s. It is a `BTreeMap`, so its encoding is
//! deterministic (keys in byte order), which lets the store use an encoded binding as its key.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::read::Reader;
use crate::write::{put_bool, put_bytes32, put_str16, put_str32};

/// How deep lists and maps may nest inside a table; deeper input is refused rather than
/// recursed into, so hostile headers cannot overflow the stack.
pub const MAX_FIELD_DEPTH: usize = 16;

/// A table of named, typed values (headers, arguments).
pub type FieldTable = BTreeMap<String, FieldValue>;

/// One typed value in a [`FieldTable`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// UTF-8 text. Tag `S`.
    String(String),
    /// A signed 64-bit integer. Tag `I`.
    Int(i64),
    /// A 64-bit float. Tag `F`.
    Float(f64),
    /// A boolean. Tag `T`.
    Bool(bool),
    /// Raw bytes. Tag `B`.
    Bytes(Bytes),
    /// An ordered list of values. Tag `L`.
    List(Vec<FieldValue>),
    /// A nested table. Tag `M`.
    Map(FieldTable),
}

const TAG_STRING: u8 = b'S';
const TAG_INT: u8 = b'I';
const TAG_FLOAT: u8 = b'F';
const TAG_BOOL: u8 = b'T';
const TAG_BYTES: u8 = b'B';
const TAG_LIST: u8 = b'L';
const TAG_MAP: u8 = b'M';

impl FieldValue {
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Writes a table: `u32` entry count, then for each entry a `str16` key and a tagged value.
pub fn put_table(dst: &mut BytesMut, table: &FieldTable) {
    dst.put_u32_le(u32::try_from(table.len()).unwrap_or(u32::MAX));
    for (k, v) in table {
        put_str16(dst, k);
        put_value(dst, v);
    }
}

fn put_value(dst: &mut BytesMut, v: &FieldValue) {
    match v {
        FieldValue::String(s) => {
            dst.put_u8(TAG_STRING);
            put_str32(dst, s);
        }
        FieldValue::Int(i) => {
            dst.put_u8(TAG_INT);
            dst.put_i64_le(*i);
        }
        FieldValue::Float(f) => {
            dst.put_u8(TAG_FLOAT);
            dst.put_f64_le(*f);
        }
        FieldValue::Bool(b) => {
            dst.put_u8(TAG_BOOL);
            put_bool(dst, *b);
        }
        FieldValue::Bytes(b) => {
            dst.put_u8(TAG_BYTES);
            put_bytes32(dst, b);
        }
        FieldValue::List(items) => {
            dst.put_u8(TAG_LIST);
            dst.put_u32_le(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                put_value(dst, item);
            }
        }
        FieldValue::Map(t) => {
            dst.put_u8(TAG_MAP);
            put_table(dst, t);
        }
    }
}

/// Reads a table written by [`put_table`].
pub fn read_table(r: &mut Reader) -> Result<FieldTable, DecodeError> {
    read_table_at(r, 0)
}

fn read_table_at(r: &mut Reader, depth: usize) -> Result<FieldTable, DecodeError> {
    if depth > MAX_FIELD_DEPTH {
        return Err(DecodeError::TooDeep {
            max: MAX_FIELD_DEPTH,
        });
    }
    let count = r.u32()?;
    let mut table = FieldTable::new();
    for _ in 0..count {
        // Each entry takes at least 3 bytes, so a huge count on a short frame fails at the
        // first missing entry instead of allocating.
        let key = r.str16("header key")?;
        let value = read_value(r, depth)?;
        table.insert(key, value);
    }
    Ok(table)
}

fn read_value(r: &mut Reader, depth: usize) -> Result<FieldValue, DecodeError> {
    let offset = r.offset();
    Ok(match r.u8()? {
        TAG_STRING => FieldValue::String(r.str32("header string")?),
        TAG_INT => FieldValue::Int(r.i64()?),
        TAG_FLOAT => FieldValue::Float(r.f64()?),
        TAG_BOOL => FieldValue::Bool(r.bool("header bool")?),
        TAG_BYTES => FieldValue::Bytes(r.bytes32()?),
        TAG_LIST => {
            if depth >= MAX_FIELD_DEPTH {
                return Err(DecodeError::TooDeep {
                    max: MAX_FIELD_DEPTH,
                });
            }
            let count = r.u32()? as usize;
            // A value is at least one byte: never reserve more than what is left.
            let mut items = Vec::with_capacity(count.min(r.remaining()));
            for _ in 0..count {
                items.push(read_value(r, depth + 1)?);
            }
            FieldValue::List(items)
        }
        TAG_MAP => FieldValue::Map(read_table_at(r, depth + 1)?),
        tag => {
            return Err(DecodeError::InvalidValue {
                field: "header value tag",
                value: u64::from(tag),
                offset,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        // 1000 nested single-element lists: a stack-overflow attempt.
        let mut buf = BytesMut::new();
        buf.put_u32_le(1);
        put_str16(&mut buf, "k");
        for _ in 0..1000 {
            buf.put_u8(TAG_LIST);
            buf.put_u32_le(1);
        }
        buf.put_u8(TAG_INT);
        buf.put_i64_le(1);
        let mut r = Reader::new(buf.freeze());
        assert!(matches!(
            read_table(&mut r),
            Err(DecodeError::TooDeep { .. })
        ));
    }

    #[test]
    fn huge_counts_on_short_input_fail_cleanly() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(u32::MAX);
        let mut r = Reader::new(buf.freeze());
        assert!(matches!(
            read_table(&mut r),
            Err(DecodeError::UnexpectedEof { .. })
        ));
    }
}
