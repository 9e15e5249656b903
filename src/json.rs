//! Field tables as JSON and back, for the CLI's `--json` output, admin listings and
//! definitions files.
//!
//! To JSON: strings, numbers and bools as themselves, integers of every width and
//! timestamps (seconds) as numbers, floats of both widths as numbers (a non-finite one as
//! `null`), void as `null`, a decimal as a string of its digits (`"12.34"`, exact, where a
//! JSON number could lose digits), bytes as a base64 string, lists as arrays, tables as
//! objects.
//!
//! From JSON: `null` is void, integers become `Int` (`U64` above `i64::MAX`), other numbers
//! `Float`. JSON has no widths, so the round trip keeps the value but not the type of
//! everything but strings, bools, `Int`, `Float`, void, lists and tables: a `U8` comes back
//! as an `Int`, an `F32` as a `Float` (widened), a timestamp as an `Int` of seconds, a
//! decimal and bytes as the string they were written as.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Number, Value};
use warren_protocol::field_table::decimal_text;
use warren_protocol::{FieldTable, FieldValue};

/// A field table as a JSON object.
pub fn table_json(table: &FieldTable) -> Value {
    Value::Object(table_map(table))
}

/// A field table as the map of a JSON object (the admin types' `JsonTable`).
pub fn table_map(table: &FieldTable) -> Map<String, Value> {
    table
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect()
}

/// One field value as JSON.
pub fn value_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::String(s) => Value::String(s.clone()),
        FieldValue::Int(i) => Value::Number((*i).into()),
        FieldValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Bytes(b) => Value::String(BASE64.encode(b)),
        FieldValue::List(items) => Value::Array(items.iter().map(value_json).collect()),
        FieldValue::Map(t) => table_json(t),
        FieldValue::Void => Value::Null,
        FieldValue::I8(i) => Value::Number((*i).into()),
        FieldValue::U8(i) => Value::Number((*i).into()),
        FieldValue::I16(i) => Value::Number((*i).into()),
        FieldValue::U16(i) => Value::Number((*i).into()),
        FieldValue::I32(i) => Value::Number((*i).into()),
        FieldValue::U32(i) => Value::Number((*i).into()),
        FieldValue::U64(i) => Value::Number((*i).into()),
        FieldValue::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        FieldValue::Decimal { scale, value } => Value::String(decimal_text(*scale, *value)),
        FieldValue::Timestamp(t) => Value::Number((*t).into()),
    }
}

/// A JSON object as a field table.
///
/// # Errors
/// The value is not an object.
pub fn json_table(value: &Value) -> Result<FieldTable, String> {
    match value {
        Value::Object(map) => Ok(object_table(map)),
        other => Err(format!("expected a JSON object of arguments, got {other}")),
    }
}

fn object_table(map: &Map<String, Value>) -> FieldTable {
    map.iter()
        .map(|(k, v)| (k.clone(), json_value(v)))
        .collect()
}

/// One JSON value as a field value, by the rules in the module docs.
pub fn json_value(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => FieldValue::Int(i),
            (None, Some(u)) => FieldValue::U64(u),
            (None, None) => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => FieldValue::String(s.clone()),
        Value::Array(items) => FieldValue::List(items.iter().map(json_value).collect()),
        Value::Object(map) => FieldValue::Map(object_table(map)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_roundtrip_through_json_except_bytes() {
        let mut inner = FieldTable::new();
        inner.insert("n".into(), FieldValue::Int(-3));
        let mut t = FieldTable::new();
        t.insert("s".into(), FieldValue::String("x".into()));
        t.insert("f".into(), FieldValue::Float(1.5));
        t.insert("b".into(), FieldValue::Bool(true));
        t.insert("l".into(), FieldValue::List(vec![FieldValue::Int(1)]));
        t.insert("m".into(), FieldValue::Map(inner));
        t.insert("v".into(), FieldValue::Void);
        t.insert("u".into(), FieldValue::U64(u64::MAX));
        assert_eq!(json_table(&table_json(&t)).unwrap(), t);
        assert!(json_table(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn typed_values_render_faithfully() {
        let dec = FieldValue::Decimal {
            scale: 2,
            value: -1234,
        };
        assert_eq!(value_json(&dec), serde_json::json!("-12.34"));
        assert_eq!(value_json(&FieldValue::U8(200)), serde_json::json!(200));
        assert_eq!(value_json(&FieldValue::I16(-3)), serde_json::json!(-3));
        assert_eq!(value_json(&FieldValue::F32(0.5)), serde_json::json!(0.5));
        assert_eq!(
            value_json(&FieldValue::Timestamp(1_700_000_000)),
            serde_json::json!(1_700_000_000)
        );
        assert_eq!(value_json(&FieldValue::Void), serde_json::Value::Null);
        // Widths do not survive JSON: the value comes back as an Int.
        assert_eq!(
            json_value(&value_json(&FieldValue::U8(200))),
            FieldValue::Int(200)
        );
    }
}
