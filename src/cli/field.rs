//! `KEY[:TYPE]=VALUE`: the one parser behind `publish --header`, `queue declare --arg`,
//! `exchange declare --arg` and `bind`/`unbind --arg`, turning command-line text into the
//! typed [`FieldValue`]s the protocol carries.
//!
//! A value is a string unless the user names a type, so `zip=01234` stays `"01234"` and
//! `ver=1.10` stays `"1.10"`. The types are those of [`FieldValue`]:
//!
//! | TYPE | VALUE | example |
//! |---|---|---|
//! | `string` | the text as is | `--header note:string=true` |
//! | `int` (or `i64`) | a signed 64-bit integer | `--header n:int=5` |
//! | `i8` `u8` `i16` `u16` `i32` `u32` `u64` | an integer of that width | `--header n:u8=200` |
//! | `float` (or `f64`) | a finite 64-bit float | `--header ratio:float=0.5` |
//! | `f32` | a finite 32-bit float | `--header ratio:f32=0.5` |
//! | `decimal` | digits with an optional point; the digits after it are the scale | `--header price:decimal=12.34` |
//! | `timestamp` | whole seconds since the Unix epoch, or an RFC 3339 date and time (`Z` or an offset; no fraction of a second unless it is zero) | `--header at:timestamp=1700000000`, `--header at:timestamp=2026-11-30T13:00:00+01:00` |
//! | `void` | nothing: present, with no value | `--header flag:void=` |
//! | `bool` | `true` or `false` | `--header ok:bool=true` |
//! | `bytes` | standard base64 (with padding) | `--header raw:bytes=AAEC` |
//! | `list` | a JSON array | `--header tags:list='["a",1]'` |
//! | `table` (or `map`) | a JSON object | `--header meta:table='{"a":1}'` |
//!
//! Inside `list` and `table`, JSON integers are ints, other numbers floats, and `null` is
//! void: the same rules as a definitions file ([`crate::json`]).
//!
//! The names Warren itself interprets are read by their known type when no type is given:
//! the integer queue arguments (`x-max-length=10` sends the integer 10) and the scheduling
//! headers `x-delay` and `x-deliver-at`. The type goes after the last `:` of the key, so a
//! key that holds a `:` needs an explicit type (`a:b:string=v`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use warren_protocol::{FieldTable, FieldValue};

use crate::broker::queue_args::{BOOLEAN_ARGUMENTS, INTEGER_ARGUMENTS};
use crate::broker::{X_DELAY, X_DELIVER_AT};

/// The value name clap shows for every flag parsed here.
pub const VALUE_NAME: &str = "KEY[:TYPE]=VALUE";

/// A [`FieldValue`] variant, as named after the `:` of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// [`FieldValue::String`]
    String,
    /// [`FieldValue::Int`]
    Int,
    /// [`FieldValue::Float`]
    Float,
    /// [`FieldValue::Bool`]
    Bool,
    /// [`FieldValue::Bytes`], written as base64.
    Bytes,
    /// [`FieldValue::List`], written as a JSON array.
    List,
    /// [`FieldValue::Map`], written as a JSON object.
    Table,
    /// [`FieldValue::Void`]: the value must be empty.
    Void,
    /// [`FieldValue::I8`]
    I8,
    /// [`FieldValue::U8`]
    U8,
    /// [`FieldValue::I16`]
    I16,
    /// [`FieldValue::U16`]
    U16,
    /// [`FieldValue::I32`]
    I32,
    /// [`FieldValue::U32`]
    U32,
    /// [`FieldValue::U64`]
    U64,
    /// [`FieldValue::F32`]
    F32,
    /// [`FieldValue::Decimal`], written `12.34`.
    Decimal,
    /// [`FieldValue::Timestamp`], in seconds since the epoch.
    Timestamp,
}

/// Every type name, for error messages.
const TYPE_NAMES: &str = "string, int, i8, u8, i16, u16, i32, u32, i64, u64, float, f32, f64, \
                          decimal, timestamp, void, bool, bytes, list or table";

fn int<T: std::str::FromStr>(
    text: &str,
    name: &str,
    wrap: fn(T) -> FieldValue,
) -> Result<FieldValue, String> {
    text.trim()
        .parse()
        .map(wrap)
        .map_err(|_| format!("'{text}' is not of type {name} (a whole number that fits in it)"))
}

/// `12.34` as scale 2, value 1234: an optional sign, digits, an optional point and digits.
fn decimal(text: &str) -> Result<FieldValue, String> {
    let err = || {
        format!(
            "'{text}' is not a decimal (digits with an optional point, at most 9 significant \
             digits, e.g. 12.34)"
        )
    };
    let t = text.trim();
    let (int_part, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = int_part.trim_start_matches(['-', '+']);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int_part.len() - digits.len() <= 1
        && !(t.contains('.') && frac.is_empty());
    if !well_formed {
        return Err(err());
    }
    let scale = u8::try_from(frac.len()).map_err(|_| err())?;
    let value = format!("{int_part}{frac}")
        .parse::<i32>()
        .map_err(|_| err())?;
    Ok(FieldValue::Decimal { scale, value })
}

/// A timestamp: whole seconds since the Unix epoch, or an RFC 3339 date and time
/// ([`rfc3339_seconds`]).
fn timestamp(text: &str) -> Result<FieldValue, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse() {
        return Ok(FieldValue::Timestamp(secs));
    }
    rfc3339_seconds(t)
        .map(FieldValue::Timestamp)
        .map_err(|why| match why {
            BadTime::Form => format!(
                "'{text}' is not a timestamp (whole seconds since the Unix epoch, or an RFC 3339 \
                 date and time such as 2026-11-30T12:00:00Z or 2026-11-30T13:00:00+01:00)"
            ),
            BadTime::Fraction => {
                format!("'{text}' has a fraction of a second: a timestamp holds whole seconds")
            }
            BadTime::BeforeEpoch => {
                format!("'{text}' is before the Unix epoch (1970-01-01T00:00:00Z)")
            }
        })
}

/// Why a date and time was refused.
#[derive(Debug, PartialEq, Eq)]
enum BadTime {
    Form,
    Fraction,
    BeforeEpoch,
}

/// Seconds since the Unix epoch of an RFC 3339 date-time, `YYYY-MM-DDThh:mm:ss` then `Z` or
/// an offset `+hh:mm`/`-hh:mm`; `t`, `z` and a space for the `T` are taken too (RFC 3339
/// allows them). A fraction of a second is taken only when it is zero, so no precision is
/// dropped silently. Hand-written (a dozen lines) because the small crates that parse
/// RFC 3339 (`humantime`) take no offsets; the calendar is `days_from_civil`.
fn rfc3339_seconds(t: &str) -> Result<u64, BadTime> {
    let b = t.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, BadTime> {
        let digits = t.get(from..from + len).ok_or(BadTime::Form)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(BadTime::Form);
        }
        digits.parse().map_err(|_| BadTime::Form)
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(BadTime::Form);
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut rest = &t[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(BadTime::Form);
        }
        if fraction.bytes().take(digits).any(|c| c != b'0') {
            return Err(BadTime::Fraction);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(t.len() - 5, 2)?, num(t.len() - 2, 2)?);
            if h > 23 || m > 59 {
                return Err(BadTime::Form);
            }
            let minutes = h * 60 + m;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return Err(BadTime::Form),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(BadTime::Form),
    };
    // A leap second (:60) counts as the next second, as POSIX time has no place for it.
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return Err(BadTime::Form);
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    u64::try_from(secs).map_err(|_| BadTime::BeforeEpoch)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`; the inverse of `civil_from_days` in `output.rs`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl FieldType {
    /// The type a name stands for: `string`, `int` (or `i64`), `i8`, `u8`, `i16`, `u16`,
    /// `i32`, `u32`, `u64`, `float` (or `f64`), `f32`, `decimal`, `timestamp`, `void`,
    /// `bool`, `bytes`, `list`, `table` or its alias `map`.
    pub fn from_name(name: &str) -> Option<FieldType> {
        Some(match name {
            "string" => FieldType::String,
            "int" | "i64" => FieldType::Int,
            "float" | "f64" => FieldType::Float,
            "void" => FieldType::Void,
            "i8" => FieldType::I8,
            "u8" => FieldType::U8,
            "i16" => FieldType::I16,
            "u16" => FieldType::U16,
            "i32" => FieldType::I32,
            "u32" => FieldType::U32,
            "u64" => FieldType::U64,
            "f32" => FieldType::F32,
            "decimal" => FieldType::Decimal,
            "timestamp" => FieldType::Timestamp,
            "bool" => FieldType::Bool,
            "bytes" => FieldType::Bytes,
            "list" => FieldType::List,
            "table" | "map" => FieldType::Table,
            _ => return None,
        })
    }

    /// Reads `text` as a value of this type.
    ///
    /// # Errors
    /// A message quoting the text and saying what was expected.
    pub fn parse(self, text: &str) -> Result<FieldValue, String> {
        match self {
            FieldType::String => Ok(FieldValue::String(text.to_owned())),
            FieldType::Int => text.trim().parse().map(FieldValue::Int).map_err(|_| {
                format!("'{text}' is not an int (a whole number that fits in 64 bits)")
            }),
            FieldType::Float => match text.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(FieldValue::Float(f)),
                _ => Err(format!("'{text}' is not a float (a finite number)")),
            },
            FieldType::Bool => match text.trim() {
                "true" => Ok(FieldValue::Bool(true)),
                "false" => Ok(FieldValue::Bool(false)),
                _ => Err(format!("'{text}' is not a bool (true or false)")),
            },
            FieldType::Bytes => BASE64
                .decode(text.trim())
                .map(|b| FieldValue::Bytes(b.into()))
                .map_err(|e| format!("'{text}' is not valid base64: {e}")),
            FieldType::List => match json(text)? {
                v @ serde_json::Value::Array(_) => Ok(crate::json::json_value(&v)),
                _ => Err(format!("'{text}' is not a JSON array")),
            },
            FieldType::Table => match json(text)? {
                v @ serde_json::Value::Object(_) => crate::json::json_table(&v),
                _ => Err(format!("'{text}' is not a JSON object")),
            }
            .map(FieldValue::Map),
            FieldType::Void if text.is_empty() => Ok(FieldValue::Void),
            FieldType::Void => Err(format!("'{text}' given for void: a void has no value")),
            FieldType::I8 => int(text, "i8", FieldValue::I8),
            FieldType::U8 => int(text, "u8", FieldValue::U8),
            FieldType::I16 => int(text, "i16", FieldValue::I16),
            FieldType::U16 => int(text, "u16", FieldValue::U16),
            FieldType::I32 => int(text, "i32", FieldValue::I32),
            FieldType::U32 => int(text, "u32", FieldValue::U32),
            FieldType::U64 => int(text, "u64", FieldValue::U64),
            FieldType::F32 => match text.trim().parse::<f32>() {
                Ok(f) if f.is_finite() => Ok(FieldValue::F32(f)),
                _ => Err(format!("'{text}' is not an f32 (a finite 32-bit number)")),
            },
            FieldType::Decimal => decimal(text),
            FieldType::Timestamp => timestamp(text),
        }
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("'{text}' is not valid JSON: {e}"))
}

/// Which names a flag knows the type of, for values given without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Message headers: `x-delay` and `x-deliver-at` are ints.
    Headers,
    /// Queue arguments: the integer and boolean ones of [`crate::broker::queue_args`].
    QueueArguments,
    /// Exchange and binding arguments: only the deduplication ones are typed (`x-match`
    /// and `alternate-exchange` are strings).
    Nothing,
}

/// The deduplication arguments an exchange takes that are not strings.
const EXCHANGE_INTEGER_ARGUMENTS: [&str; 2] = [
    crate::broker::dedup::X_CACHE_SIZE,
    crate::broker::dedup::X_CACHE_TTL,
];

impl Known {
    fn type_of(self, key: &str, value: &str) -> FieldType {
        let ints: &[&str] = match self {
            Known::Headers => &[X_DELAY, X_DELIVER_AT],
            Known::QueueArguments => &INTEGER_ARGUMENTS,
            Known::Nothing => &EXCHANGE_INTEGER_ARGUMENTS,
        };
        let arguments = self != Known::Headers;
        if ints.contains(&key) {
            FieldType::Int
        } else if arguments
            && (BOOLEAN_ARGUMENTS.contains(&key)
                && (self == Known::QueueArguments
                    || key == crate::broker::dedup::X_MESSAGE_DEDUPLICATION))
        {
            FieldType::Bool
        } else if arguments
            && key == crate::broker::dedup::X_DEDUPLICATION_WINDOW
            && !value.trim().is_empty()
            && value.trim().chars().all(|c| c.is_ascii_digit())
        {
            // A count; a duration has a unit (`10m`) and stays a string.
            FieldType::Int
        } else {
            FieldType::String
        }
    }
}

/// Parses `KEY=VALUE` or `KEY:TYPE=VALUE`. The key ends at the first `=`; its last `:`
/// starts the type.
///
/// # Errors
/// A message (clap prints it after the flag and the text) when there is no `=`, the key is
/// empty, the type is unknown, or the value is not of its type.
pub fn parse_field(text: &str, known: Known) -> Result<(String, FieldValue), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected {VALUE_NAME}, found no '=' in '{text}'"))?;
    let (key, kind) = match key.rsplit_once(':') {
        Some((key, name)) => {
            let kind = FieldType::from_name(name).ok_or_else(|| {
                format!("unknown type '{name}' in '{text}': expected {TYPE_NAMES}")
            })?;
            (key, kind)
        }
        None => (key, known.type_of(key, value)),
    };
    if key.is_empty() {
        return Err(format!(
            "expected {VALUE_NAME}, found an empty key in '{text}'"
        ));
    }
    let value = kind.parse(value).map_err(|e| format!("{key}: {e}"))?;
    Ok((key.to_owned(), value))
}

/// clap value parser for `--header`.
///
/// # Errors
/// See [`parse_field`].
pub fn parse_header(text: &str) -> Result<(String, FieldValue), String> {
    parse_field(text, Known::Headers)
}

/// clap value parser for `queue declare --arg`.
///
/// # Errors
/// See [`parse_field`].
pub fn parse_queue_arg(text: &str) -> Result<(String, FieldValue), String> {
    parse_field(text, Known::QueueArguments)
}

/// clap value parser for `exchange declare --arg` and `bind`/`unbind --arg`.
///
/// # Errors
/// See [`parse_field`].
pub fn parse_plain_arg(text: &str) -> Result<(String, FieldValue), String> {
    parse_field(text, Known::Nothing)
}

/// Collects parsed pairs into a table; a repeated key keeps its last value.
pub fn field_table(pairs: Vec<(String, FieldValue)>) -> FieldTable {
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> FieldValue {
        parse_header(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .1
    }

    fn s(text: &str) -> FieldValue {
        FieldValue::String(text.into())
    }

    #[test]
    fn untyped_values_are_strings_exactly_as_typed() {
        for (text, want) in [
            ("zip=01234", "01234"),
            ("ver=1.10", "1.10"),
            ("id=1e3", "1e3"),
            ("ok=true", "true"),
            ("q=\"10\"", "\"10\""),
            ("k=a=b", "a=b"),
            ("k=", ""),
        ] {
            assert_eq!(header(text), s(want), "{text}");
        }
        assert_eq!(parse_header("zip=01234").unwrap().0, "zip");
    }

    #[test]
    fn every_type_parses() {
        assert_eq!(header("k:string=5"), s("5"));
        assert_eq!(header("k:int=-5"), FieldValue::Int(-5));
        assert_eq!(header("k:float=1.10"), FieldValue::Float(1.1));
        assert_eq!(header("k:float=3"), FieldValue::Float(3.0));
        assert_eq!(header("k:bool=true"), FieldValue::Bool(true));
        assert_eq!(header("k:bool=false"), FieldValue::Bool(false));
        assert_eq!(
            header("k:bytes=AAEC/w=="),
            FieldValue::Bytes(vec![0, 1, 2, 255].into())
        );
        assert_eq!(
            header(r#"k:list=["a",1,1.5,true,[2]]"#),
            FieldValue::List(vec![
                s("a"),
                FieldValue::Int(1),
                FieldValue::Float(1.5),
                FieldValue::Bool(true),
                FieldValue::List(vec![FieldValue::Int(2)]),
            ])
        );
        let table = FieldTable::from([
            ("n".to_owned(), FieldValue::Int(1)),
            ("m".to_owned(), FieldValue::Map(FieldTable::new())),
        ]);
        assert_eq!(
            header(r#"k:table={"n":1,"m":{}}"#),
            FieldValue::Map(table.clone())
        );
        assert_eq!(header(r#"k:map={"n":1,"m":{}}"#), FieldValue::Map(table));
        assert_eq!(header("k:void="), FieldValue::Void);
        assert_eq!(header("k:i8=-128"), FieldValue::I8(-128));
        assert_eq!(header("k:u8=255"), FieldValue::U8(255));
        assert_eq!(header("k:i16=-2"), FieldValue::I16(-2));
        assert_eq!(header("k:u16=65535"), FieldValue::U16(65535));
        assert_eq!(header("k:i32=-3"), FieldValue::I32(-3));
        assert_eq!(header("k:u32=4294967295"), FieldValue::U32(u32::MAX));
        assert_eq!(header("k:i64=-4"), FieldValue::Int(-4));
        assert_eq!(
            header("k:u64=18446744073709551615"),
            FieldValue::U64(u64::MAX)
        );
        assert_eq!(header("k:f32=0.5"), FieldValue::F32(0.5));
        assert_eq!(header("k:f64=0.5"), FieldValue::Float(0.5));
        assert_eq!(
            header("k:timestamp=1700000000"),
            FieldValue::Timestamp(1_700_000_000)
        );
        assert_eq!(
            header("k:list=[null]"),
            FieldValue::List(vec![FieldValue::Void])
        );
        let dec = |scale, value| FieldValue::Decimal { scale, value };
        assert_eq!(header("k:decimal=12.34"), dec(2, 1234));
        assert_eq!(header("k:decimal=-0.05"), dec(2, -5));
        assert_eq!(header("k:decimal=7"), dec(0, 7));
        for bad in ["", "1.", ".5", "1.2.3", "--1", "1e3", "99999999999"] {
            let text = format!("k:decimal={bad}");
            assert!(parse_header(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_type_follows_the_last_colon_of_the_key() {
        assert_eq!(parse_header("a:b:string=v"), Ok(("a:b".into(), s("v"))));
        assert_eq!(
            parse_header("k:int=a:b").unwrap_err(),
            "k: 'a:b' is not an int (a whole number that fits in 64 bits)"
        );
    }

    #[test]
    fn known_names_take_their_type_when_none_is_given() {
        assert_eq!(
            parse_queue_arg("x-max-length=10"),
            Ok(("x-max-length".into(), FieldValue::Int(10)))
        );
        assert_eq!(
            parse_queue_arg("x-message-ttl=5000").unwrap().1,
            FieldValue::Int(5000)
        );
        assert_eq!(
            parse_queue_arg("x-retry-backoff=1s,5s").unwrap().1,
            s("1s,5s")
        );
        assert_eq!(
            parse_queue_arg("x-retry-backoff=1000").unwrap().1,
            s("1000")
        );
        assert_eq!(
            parse_queue_arg("x-dead-letter-exchange=dlx").unwrap().1,
            s("dlx")
        );
        assert_eq!(
            parse_queue_arg("x-max-priority=10").unwrap().1,
            FieldValue::Int(10)
        );
        // An explicit type wins over the known one.
        assert_eq!(
            parse_queue_arg("x-max-length:string=10").unwrap().1,
            s("10")
        );
        assert_eq!(header("x-delay=250"), FieldValue::Int(250));
        assert_eq!(
            header("x-deliver-at=1700000000000"),
            FieldValue::Int(1_700_000_000_000)
        );
        // Headers do not know queue arguments, and bindings know nothing.
        assert_eq!(header("x-max-length=10"), s("10"));
        assert_eq!(parse_plain_arg("x-match=all").unwrap().1, s("all"));
        assert_eq!(parse_plain_arg("x-delay=1").unwrap().1, s("1"));
    }

    #[test]
    fn errors_name_the_text_and_what_was_expected() {
        for (text, want) in [
            (
                "novalue",
                "expected KEY[:TYPE]=VALUE, found no '=' in 'novalue'",
            ),
            (
                "=v",
                "expected KEY[:TYPE]=VALUE, found an empty key in '=v'",
            ),
            (
                ":int=5",
                "expected KEY[:TYPE]=VALUE, found an empty key in ':int=5'",
            ),
            (
                "n:integer=5",
                "unknown type 'integer' in 'n:integer=5': expected string, int, i8, u8, i16, \
                 u16, i32, u32, i64, u64, float, f32, f64, decimal, timestamp, void, bool, \
                 bytes, list or table",
            ),
            (
                "n:int=5x",
                "n: '5x' is not an int (a whole number that fits in 64 bits)",
            ),
            (
                "n:int=99999999999999999999",
                "n: '99999999999999999999' is not an int (a whole number that fits in 64 bits)",
            ),
            ("f:float=nan", "f: 'nan' is not a float (a finite number)"),
            ("f:float=abc", "f: 'abc' is not a float (a finite number)"),
            ("b:bool=yes", "b: 'yes' is not a bool (true or false)"),
            ("l:list={}", "l: '{}' is not a JSON array"),
            ("t:table=[1]", "t: '[1]' is not a JSON object"),
            (
                "n:u8=256",
                "n: '256' is not of type u8 (a whole number that fits in it)",
            ),
            (
                "n:u64=-1",
                "n: '-1' is not of type u64 (a whole number that fits in it)",
            ),
            ("v:void=x", "v: 'x' given for void: a void has no value"),
            (
                "f:f32=1e39",
                "f: '1e39' is not an f32 (a finite 32-bit number)",
            ),
            (
                "t:timestamp=-1",
                "t: '-1' is not a timestamp (whole seconds since the Unix epoch, or an RFC 3339 \
                 date and time such as 2026-11-30T12:00:00Z or 2026-11-30T13:00:00+01:00)",
            ),
            (
                "t:timestamp=2026-11-30T12:00:00.5Z",
                "t: '2026-11-30T12:00:00.5Z' has a fraction of a second: a timestamp holds \
                 whole seconds",
            ),
            (
                "t:timestamp=1969-12-31T23:59:59Z",
                "t: '1969-12-31T23:59:59Z' is before the Unix epoch (1970-01-01T00:00:00Z)",
            ),
            (
                "x-max-length=ten",
                "x-max-length: 'ten' is not an int (a whole number that fits in 64 bits)",
            ),
        ] {
            let err = parse_queue_arg(text).unwrap_err();
            assert_eq!(err, want, "{text}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = parse_header("r:bytes=not base64!").unwrap_err();
        assert!(
            err.starts_with("r: 'not base64!' is not valid base64: "),
            "{err}"
        );
        let err = parse_header("l:list=[1,").unwrap_err();
        assert!(err.starts_with("l: '[1,' is not valid JSON: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let table = field_table(vec![
            ("k".into(), FieldValue::Int(1)),
            ("k".into(), FieldValue::Int(2)),
        ]);
        assert_eq!(table.get("k"), Some(&FieldValue::Int(2)));
    }

    #[test]
    fn a_timestamp_is_epoch_seconds_or_rfc_3339() {
        let at = |text: &str| rfc3339_seconds(text);
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(at("2026-11-30T12:00:00Z"), Ok(1_796_040_000));
        assert_eq!(at("2026-11-30T13:00:00+01:00"), Ok(1_796_040_000));
        assert_eq!(at("2026-11-30T06:30:00-05:30"), Ok(1_796_040_000));
        assert_eq!(at("2026-11-30t12:00:00z"), Ok(1_796_040_000));
        assert_eq!(at("2026-11-30 12:00:00Z"), Ok(1_796_040_000));
        assert_eq!(at("2026-11-30T12:00:00.000Z"), Ok(1_796_040_000));
        assert_eq!(at("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(at("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        assert_eq!(at("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(at("2026-11-30T12:00:00.001Z"), Err(BadTime::Fraction));
        assert_eq!(at("1970-01-01T00:59:59+01:00"), Err(BadTime::BeforeEpoch));
        for bad in [
            "2026-11-30",
            "2026-11-30T12:00:00",
            "2026-11-30T12:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T12:60:00Z",
            "2026-11-30T12:00:00+24:00",
            "2026-11-30T12:00:00+0100",
            "2026-11-30T12:00:00.Z",
            "2026-11-30T12:00:00 Z",
            "+026-11-30T12:00:00Z",
            "2026-11-30T12:00:00Zjunk",
            "２０２６-11-30T12:00:00Z",
        ] {
            assert_eq!(at(bad), Err(BadTime::Form), "{bad}");
        }
        assert_eq!(
            header("k:timestamp=2026-11-30T13:00:00+01:00"),
            FieldValue::Timestamp(1_796_040_000)
        );
        assert_eq!(header("k:timestamp= 5 "), FieldValue::Timestamp(5));
    }
}
