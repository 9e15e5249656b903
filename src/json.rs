//! Field tables as JSON and back, for the CLI's `--json` output, admin listings and
//! definitions files.
//!
//! To JSON: strings, numbers and bools as themselves, bytes as a base64 string, lists as
//! arrays, tables as objects; a non-finite float becomes `null`. From JSON: integers become
//! `Int`, other numbers `Float`, and `null` is refused (tables have no null). Bytes do not
//! survive the round trip: they come back as the base64 string.

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
/// The value is not an object, or holds a `null` (the error names its path).
pub fn json_table(value: &Value) -> Result<FieldTable, String> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| json_value(v, k).map(|fv| (k.clone(), fv)))
            .collect(),
        other => Err(format!("expected a JSON object of arguments, got {other}")),
    }
}

/// One JSON value as a field value, by the rules in the module docs; `path` names the value
/// in errors (`headers.x[2]: null is not a valid argument value`).
///
/// # Errors
/// The value is or holds a `null`.
pub fn json_value(value: &Value, path: &str) -> Result<FieldValue, String> {
    Ok(match value {
        Value::Null => return Err(format!("{path}: null is not a valid argument value")),
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => FieldValue::String(s.clone()),
        Value::Array(items) => FieldValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_value(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(_) => FieldValue::Map(json_table(value)?),
    })
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
        assert_eq!(json_table(&table_json(&t)).unwrap(), t);
        assert!(json_table(&serde_json::json!({"a": null}))
            .unwrap_err()
            .contains("a"));
        assert!(json_table(&serde_json::json!([1])).is_err());
    }
}
