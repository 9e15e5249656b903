//! Typed header values: the `headers` property, queue and binding arguments.
//!
//! A [`FieldTable`] maps string keys to [`FieldValue`]s. It is a `BTreeMap`, so its encoding is
//! deterministic (keys in byte order), which lets the store use an encoded binding as its key.
//!
//! The value types are those RabbitMQ accepts in AMQP 0-9-1 tables (void, signed and unsigned
//! integers of 8 to 64 bits, 32- and 64-bit floats, decimal, timestamp, bytes, lists, tables),
//! under Warren's own one-byte tags (PROTOCOL.md §8). A value keeps its type and width across
//! the wire and the store: `PartialEq` is structural, so `U8(1) != Int(1)`. Routing compares
//! by value instead (integers of any width are equal when their values are; see the headers
//! exchange in the server).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::read::Reader;
use crate::write::{put_bool, put_bytes32, put_str16, put_str32};

/// How deep lists and maps may nest inside a table; deeper input is refused rather than
/// recursed into, so hostile headers cannot overflow the stack.
pub const MAX_FIELD_DEPTH: usize = 16;

/// The most structure an argument table may carry (queue, exchange, binding, consume and
/// admin arguments): 64 KiB of its encoding, not counting the contents of its string and byte
/// values. Decoding costs per value (~40 bytes each, however small on the wire), while a
/// string costs its own length either way, so this bounds what building the table costs and
/// still lets one string argument be large (a definitions document). Tables in practice are a
/// few `x-` settings or a headers binding's values.
pub const MAX_ARGUMENT_TABLE_BYTES: usize = 64 * 1024;

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
    /// Present, with no value (AMQP's void). Tag `V`, no data.
    Void,
    /// A signed 8-bit integer. Tag `b`.
    I8(i8),
    /// An unsigned 8-bit integer. Tag `o`.
    U8(u8),
    /// A signed 16-bit integer. Tag `s`.
    I16(i16),
    /// An unsigned 16-bit integer. Tag `u`.
    U16(u16),
    /// A signed 32-bit integer. Tag `i`.
    I32(i32),
    /// An unsigned 32-bit integer. Tag `w`.
    U32(u32),
    /// An unsigned 64-bit integer. Tag `U`.
    U64(u64),
    /// A 32-bit float. Tag `f`.
    F32(f32),
    /// An AMQP decimal: `value / 10^scale`. Tag `D`.
    Decimal {
        /// Number of decimal digits after the point.
        scale: u8,
        /// The unscaled value.
        value: i32,
    },
    /// Seconds since the Unix epoch (AMQP's timestamp). Tag `t`.
    Timestamp(u64),
}

const TAG_STRING: u8 = b'S';
const TAG_INT: u8 = b'I';
const TAG_FLOAT: u8 = b'F';
const TAG_BOOL: u8 = b'T';
const TAG_BYTES: u8 = b'B';
const TAG_LIST: u8 = b'L';
const TAG_MAP: u8 = b'M';
const TAG_VOID: u8 = b'V';
const TAG_I8: u8 = b'b';
const TAG_U8: u8 = b'o';
const TAG_I16: u8 = b's';
const TAG_U16: u8 = b'u';
const TAG_I32: u8 = b'i';
const TAG_U32: u8 = b'w';
const TAG_U64: u8 = b'U';
const TAG_F32: u8 = b'f';
const TAG_DECIMAL: u8 = b'D';
const TAG_TIMESTAMP: u8 = b't';

impl FieldValue {
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is an integer of any width that fits (a `U64` above
    /// `i64::MAX` does not). Timestamps and decimals are not integers here.
    pub fn as_int(&self) -> Option<i64> {
        self.as_i128().and_then(|i| i64::try_from(i).ok())
    }

    /// The value as an `i128`, if it is an integer of any width: every integer type fits, so
    /// integers of different widths compare by value through this.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            FieldValue::Int(i) => i128::from(i),
            FieldValue::I8(i) => i128::from(i),
            FieldValue::U8(i) => i128::from(i),
            FieldValue::I16(i) => i128::from(i),
            FieldValue::U16(i) => i128::from(i),
            FieldValue::I32(i) => i128::from(i),
            FieldValue::U32(i) => i128::from(i),
            FieldValue::U64(i) => i128::from(i),
            _ => return None,
        })
    }

    /// The name of the value's type, as the CLI's typed syntax spells it (`string`, `i64`,
    /// `u8`, `void`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::String(_) => "string",
            FieldValue::Int(_) => "i64",
            FieldValue::Float(_) => "f64",
            FieldValue::Bool(_) => "bool",
            FieldValue::Bytes(_) => "bytes",
            FieldValue::List(_) => "list",
            FieldValue::Map(_) => "table",
            FieldValue::Void => "void",
            FieldValue::I8(_) => "i8",
            FieldValue::U8(_) => "u8",
            FieldValue::I16(_) => "i16",
            FieldValue::U16(_) => "u16",
            FieldValue::I32(_) => "i32",
            FieldValue::U32(_) => "u32",
            FieldValue::U64(_) => "u64",
            FieldValue::F32(_) => "f32",
            FieldValue::Decimal { .. } => "decimal",
            FieldValue::Timestamp(_) => "timestamp",
        }
    }
}

/// A decimal as text: `Decimal { scale: 2, value: -1234 }` is `-12.34`, scale 0 has no point.
pub fn decimal_text(scale: u8, value: i32) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let digits = value.unsigned_abs().to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
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
        FieldValue::Void => dst.put_u8(TAG_VOID),
        FieldValue::I8(i) => {
            dst.put_u8(TAG_I8);
            dst.put_i8(*i);
        }
        FieldValue::U8(i) => {
            dst.put_u8(TAG_U8);
            dst.put_u8(*i);
        }
        FieldValue::I16(i) => {
            dst.put_u8(TAG_I16);
            dst.put_i16_le(*i);
        }
        FieldValue::U16(i) => {
            dst.put_u8(TAG_U16);
            dst.put_u16_le(*i);
        }
        FieldValue::I32(i) => {
            dst.put_u8(TAG_I32);
            dst.put_i32_le(*i);
        }
        FieldValue::U32(i) => {
            dst.put_u8(TAG_U32);
            dst.put_u32_le(*i);
        }
        FieldValue::U64(i) => {
            dst.put_u8(TAG_U64);
            dst.put_u64_le(*i);
        }
        FieldValue::F32(f) => {
            dst.put_u8(TAG_F32);
            dst.put_f32_le(*f);
        }
        FieldValue::Decimal { scale, value } => {
            dst.put_u8(TAG_DECIMAL);
            dst.put_u8(*scale);
            dst.put_i32_le(*value);
        }
        FieldValue::Timestamp(t) => {
            dst.put_u8(TAG_TIMESTAMP);
            dst.put_u64_le(*t);
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

/// Reads a request's argument table, unless its structure (see [`MAX_ARGUMENT_TABLE_BYTES`])
/// is larger than that: then it is stepped over without being built, its size noted in the
/// reader ([`Reader::oversized_table`]) and an empty table returned, so the frame decodes on
/// and the caller can refuse the request by its id.
///
/// # Errors
/// As [`read_table`]; an oversized table is checked for layout only (as [`skip_table`]).
pub fn read_arguments(r: &mut Reader) -> Result<FieldTable, DecodeError> {
    // Measured only when the rest of the frame could hold more than the cap.
    if r.remaining() > MAX_ARGUMENT_TABLE_BYTES {
        let mut ahead = r.clone();
        let mut contents = 0;
        skip_table_at(&mut ahead, 0, &mut contents)?;
        let size = ahead
            .offset()
            .saturating_sub(r.offset())
            .saturating_sub(contents);
        if size > MAX_ARGUMENT_TABLE_BYTES {
            *r = ahead;
            r.note_oversized_table(size);
            return Ok(FieldTable::new());
        }
    }
    read_table(r)
}

/// Steps over an encoded table without building it: no allocation however many entries it
/// holds, so a decoder can measure a table before deciding to decode it. Checks the layout
/// (tags, lengths, nesting depth) but not the UTF-8 of strings.
///
/// # Errors
/// The same layout errors as [`read_table`].
pub fn skip_table(r: &mut Reader) -> Result<(), DecodeError> {
    skip_table_at(r, 0, &mut 0)
}

/// `contents` adds up the lengths of the string and byte values stepped over.
fn skip_table_at(r: &mut Reader, depth: usize, contents: &mut usize) -> Result<(), DecodeError> {
    if depth > MAX_FIELD_DEPTH {
        return Err(DecodeError::TooDeep {
            max: MAX_FIELD_DEPTH,
        });
    }
    let count = r.u32()?;
    for _ in 0..count {
        let key_len = r.u16()?;
        r.skip(usize::from(key_len))?;
        skip_value_at(r, depth, contents)?;
    }
    Ok(())
}

pub(crate) fn skip_value(r: &mut Reader, depth: usize) -> Result<(), DecodeError> {
    skip_value_at(r, depth, &mut 0)
}

fn skip_value_at(r: &mut Reader, depth: usize, contents: &mut usize) -> Result<(), DecodeError> {
    let offset = r.offset();
    let fixed = match r.u8()? {
        TAG_STRING | TAG_BYTES => {
            let n = r.u32()? as usize;
            *contents = contents.saturating_add(n);
            n
        }
        TAG_INT | TAG_FLOAT | TAG_U64 | TAG_TIMESTAMP => 8,
        TAG_BOOL => {
            r.bool("header bool")?;
            0
        }
        TAG_LIST => {
            if depth >= MAX_FIELD_DEPTH {
                return Err(DecodeError::TooDeep {
                    max: MAX_FIELD_DEPTH,
                });
            }
            for _ in 0..r.u32()? {
                skip_value_at(r, depth + 1, contents)?;
            }
            0
        }
        TAG_MAP => {
            skip_table_at(r, depth + 1, contents)?;
            0
        }
        TAG_VOID => 0,
        TAG_I8 | TAG_U8 => 1,
        TAG_I16 | TAG_U16 => 2,
        TAG_I32 | TAG_U32 | TAG_F32 => 4,
        TAG_DECIMAL => 5,
        tag => {
            return Err(DecodeError::InvalidValue {
                field: "header value tag",
                value: u64::from(tag),
                offset,
            })
        }
    };
    r.skip(fixed)?;
    Ok(())
}

/// Checks an encoded table as strictly as [`read_table`] does (the same errors at the same
/// offsets: layout, depth, UTF-8 of keys and strings, booleans) without building it. Returns
/// whether the encoding is canonical, that is exactly what [`put_table`] writes for the table
/// [`read_table`] would build: keys in strictly increasing byte order at every level (a
/// repeated key, which `read_table` keeps the last of, is not canonical).
pub(crate) fn validate_table(r: &mut Reader) -> Result<bool, DecodeError> {
    validate_table_at(r, 0)
}

fn validate_table_at(r: &mut Reader, depth: usize) -> Result<bool, DecodeError> {
    if depth > MAX_FIELD_DEPTH {
        return Err(DecodeError::TooDeep {
            max: MAX_FIELD_DEPTH,
        });
    }
    // Keys are compared in a view of the table taken before reading it (no copies).
    let table = r.clone();
    let base = table.offset();
    let key_at = |(at, len): (usize, usize)| {
        let from = at.saturating_sub(base);
        table.remaining_slice().get(from..from.saturating_add(len))
    };
    let count = r.u32()?;
    let mut canonical = true;
    let mut previous = None;
    for _ in 0..count {
        let key = r.skip_str16("header key")?;
        if previous.is_some_and(|p| key_at(p) >= key_at(key)) {
            canonical = false;
        }
        previous = Some(key);
        canonical &= validate_value(r, depth)?;
    }
    Ok(canonical)
}

fn validate_value(r: &mut Reader, depth: usize) -> Result<bool, DecodeError> {
    let offset = r.offset();
    let fixed = match r.u8()? {
        TAG_STRING => {
            r.skip_str32("header string")?;
            0
        }
        TAG_BYTES => r.u32()? as usize,
        TAG_INT | TAG_FLOAT | TAG_U64 | TAG_TIMESTAMP => 8,
        TAG_BOOL => {
            r.bool("header bool")?;
            0
        }
        TAG_LIST => {
            if depth >= MAX_FIELD_DEPTH {
                return Err(DecodeError::TooDeep {
                    max: MAX_FIELD_DEPTH,
                });
            }
            let mut canonical = true;
            for _ in 0..r.u32()? {
                canonical &= validate_value(r, depth + 1)?;
            }
            return Ok(canonical);
        }
        TAG_MAP => return validate_table_at(r, depth + 1),
        TAG_VOID => 0,
        TAG_I8 | TAG_U8 => 1,
        TAG_I16 | TAG_U16 => 2,
        TAG_I32 | TAG_U32 | TAG_F32 => 4,
        TAG_DECIMAL => {
            // Its scale and its value apart, as `read_value` reads them, so a truncated
            // decimal is refused with the same error.
            r.skip(1)?;
            4
        }
        tag => {
            return Err(DecodeError::InvalidValue {
                field: "header value tag",
                value: u64::from(tag),
                offset,
            })
        }
    };
    r.skip(fixed)?;
    Ok(true)
}

pub(crate) fn read_value(r: &mut Reader, depth: usize) -> Result<FieldValue, DecodeError> {
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
        TAG_VOID => FieldValue::Void,
        TAG_I8 => FieldValue::I8(r.i8()?),
        TAG_U8 => FieldValue::U8(r.u8()?),
        TAG_I16 => FieldValue::I16(r.i16()?),
        TAG_U16 => FieldValue::U16(r.u16()?),
        TAG_I32 => FieldValue::I32(r.i32()?),
        TAG_U32 => FieldValue::U32(r.u32()?),
        TAG_U64 => FieldValue::U64(r.u64()?),
        TAG_F32 => FieldValue::F32(r.f32()?),
        TAG_DECIMAL => FieldValue::Decimal {
            scale: r.u8()?,
            value: r.i32()?,
        },
        TAG_TIMESTAMP => FieldValue::Timestamp(r.u64()?),
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
    fn skipping_a_table_steps_over_exactly_what_reading_it_does() {
        let mut inner = FieldTable::new();
        inner.insert(
            "x".into(),
            FieldValue::Decimal {
                scale: 2,
                value: -5,
            },
        );
        let values = [
            FieldValue::String("s".into()),
            FieldValue::Int(-1),
            FieldValue::Float(1.5),
            FieldValue::Bool(true),
            FieldValue::Bytes(Bytes::from_static(b"bb")),
            FieldValue::List(vec![FieldValue::Void, FieldValue::U8(1)]),
            FieldValue::Map(inner),
            FieldValue::I8(-1),
            FieldValue::I16(-2),
            FieldValue::U16(2),
            FieldValue::I32(-3),
            FieldValue::U32(3),
            FieldValue::U64(4),
            FieldValue::F32(0.5),
            FieldValue::Timestamp(9),
        ];
        let table: FieldTable = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), v))
            .collect();
        let mut buf = BytesMut::new();
        put_table(&mut buf, &table);
        buf.put_u8(0xEE);
        let bytes = buf.freeze();
        let mut read = Reader::new(bytes.clone());
        assert_eq!(read_table(&mut read).unwrap(), table);
        let mut skip = Reader::new(bytes);
        skip_table(&mut skip).unwrap();
        assert_eq!(skip.offset(), read.offset());
        assert_eq!(skip.remaining(), 1);
    }

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
    fn decimal_text_places_the_point() {
        assert_eq!(decimal_text(2, 1234), "12.34");
        assert_eq!(decimal_text(2, -5), "-0.05");
        assert_eq!(decimal_text(0, 7), "7");
        assert_eq!(decimal_text(3, i32::MIN), "-2147483.648");
    }

    #[test]
    fn integers_of_every_width_widen() {
        assert_eq!(FieldValue::U8(200).as_int(), Some(200));
        assert_eq!(FieldValue::I16(-2).as_int(), Some(-2));
        assert_eq!(FieldValue::U64(u64::MAX).as_int(), None);
        assert_eq!(
            FieldValue::U64(u64::MAX).as_i128(),
            Some(i128::from(u64::MAX))
        );
        assert_eq!(FieldValue::Timestamp(5).as_int(), None);
        assert_ne!(FieldValue::U8(1), FieldValue::Int(1));
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
