//! Why a redeclaration is refused: the first attribute or argument that differs from what
//! exists, named with both values, as RabbitMQ's `inequivalent arg` error does. The values
//! are printed as a user would type them (`1000`, `dlx`, `true`), not as Rust debug output.

use warren_protocol::{FieldTable, FieldValue};

/// How many characters of a printed value an error quotes before cutting it short, so a huge
/// argument does not come back whole in the error reply.
const MAX_VALUE_CHARS: usize = 64;

/// The message for a redeclaration of the `kind` (`queue`, `exchange`) `name` that differs
/// from the existing one, or `None` when nothing differs. `flags` are `(name, received,
/// current)` and are compared first, in the order given; then the arguments, in key order.
/// A side without the argument prints as `none`.
pub(crate) fn inequivalence(
    kind: &str,
    name: &str,
    flags: &[(&str, String, String)],
    received_args: &FieldTable,
    current_args: &FieldTable,
) -> Option<String> {
    let (arg, received, current) = flags
        .iter()
        .find(|(_, received, current)| received != current)
        .map(|(arg, received, current)| ((*arg).to_owned(), received.clone(), current.clone()))
        .or_else(|| {
            let mut keys: Vec<&String> = received_args.keys().chain(current_args.keys()).collect();
            keys.sort();
            keys.into_iter()
                .find(|k| received_args.get(*k) != current_args.get(*k))
                .map(|k| {
                    (
                        k.clone(),
                        optional_value(received_args.get(k)),
                        optional_value(current_args.get(k)),
                    )
                })
        })?;
    Some(format!(
        "inequivalent arg '{arg}' for {kind} '{name}': received {received}, current {current}"
    ))
}

fn optional_value(value: Option<&FieldValue>) -> String {
    value.map_or_else(|| "none".to_owned(), user_value)
}

/// A value as a user would type it after `--arg KEY=`: integers and booleans bare, strings
/// bare unless they would read back as another type (or are empty), then in double quotes.
pub(crate) fn user_value(value: &FieldValue) -> String {
    let text = match value {
        FieldValue::Int(n) => n.to_string(),
        // Debug keeps the `.0` of an integral float, so it reads as a float.
        FieldValue::Float(f) => format!("{f:?}"),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::String(s) => {
            // Quoted when it could be mistaken for a number or a boolean of the other side.
            let ambiguous = s.is_empty()
                || s.parse::<f64>().is_ok()
                || s == "true"
                || s == "false"
                || s.starts_with('"');
            if ambiguous {
                format!("{s:?}")
            } else {
                s.clone()
            }
        }
        FieldValue::Bytes(b) => format!("<{} bytes of binary data>", b.len()),
        FieldValue::List(items) => format!(
            "[{}]",
            items.iter().map(user_value).collect::<Vec<_>>().join(", ")
        ),
        FieldValue::Map(table) => format!(
            "{{{}}}",
            table
                .iter()
                .map(|(k, v)| format!("{k}: {}", user_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // The other types: the value, then its type (`5 (u8)`).
        FieldValue::Void => "(void)".to_owned(),
        FieldValue::I8(n) => format!("{n} (i8)"),
        FieldValue::U8(n) => format!("{n} (u8)"),
        FieldValue::I16(n) => format!("{n} (i16)"),
        FieldValue::U16(n) => format!("{n} (u16)"),
        FieldValue::I32(n) => format!("{n} (i32)"),
        FieldValue::U32(n) => format!("{n} (u32)"),
        FieldValue::U64(n) => format!("{n} (u64)"),
        FieldValue::F32(f) => format!("{f:?} (f32)"),
        FieldValue::Decimal { scale, value } => {
            let text = warren_protocol::field_table::decimal_text(*scale, *value);
            format!("{text} (decimal)")
        }
        FieldValue::Timestamp(t) => format!("{t} (timestamp)"),
    };
    if text.chars().count() <= MAX_VALUE_CHARS {
        text
    } else {
        let head: String = text.chars().take(MAX_VALUE_CHARS).collect();
        format!("{head}... ({} bytes in all)", text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldValue::{Bool, Float, Int, List, Map};

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn s(text: &str) -> FieldValue {
        FieldValue::String(text.to_owned())
    }

    #[test]
    fn an_argument_that_differs_is_named_with_both_values() {
        let msg = inequivalence(
            "queue",
            "work",
            &[],
            &table(&[("x-message-ttl", Int(1000))]),
            &table(&[("x-message-ttl", Int(5000))]),
        );
        assert_eq!(
            msg.as_deref(),
            Some("inequivalent arg 'x-message-ttl' for queue 'work': received 1000, current 5000")
        );
    }

    #[test]
    fn a_missing_side_is_none() {
        let ttl = table(&[("x-message-ttl", Int(5000))]);
        assert_eq!(
            inequivalence("queue", "work", &[], &FieldTable::new(), &ttl).as_deref(),
            Some("inequivalent arg 'x-message-ttl' for queue 'work': received none, current 5000")
        );
        assert_eq!(
            inequivalence("queue", "work", &[], &ttl, &FieldTable::new()).as_deref(),
            Some("inequivalent arg 'x-message-ttl' for queue 'work': received 5000, current none")
        );
    }

    #[test]
    fn flags_come_first_and_equal_declarations_have_no_message() {
        let flags = [
            ("durable", "false".to_owned(), "true".to_owned()),
            ("exclusive", "false".to_owned(), "false".to_owned()),
        ];
        let args = table(&[("x-max-length", Int(1))]);
        assert_eq!(
            inequivalence("queue", "q", &flags, &args, &FieldTable::new()).as_deref(),
            Some("inequivalent arg 'durable' for queue 'q': received false, current true")
        );
        let same = [("durable", "true".to_owned(), "true".to_owned())];
        assert_eq!(inequivalence("queue", "q", &same, &args, &args), None);
    }

    #[test]
    fn values_print_as_typed() {
        assert_eq!(user_value(&Int(-5)), "-5");
        assert_eq!(user_value(&Float(1000.0)), "1000.0");
        assert_eq!(user_value(&Bool(true)), "true");
        assert_eq!(user_value(&s("dlx")), "dlx");
        assert_eq!(user_value(&s("1s,5s")), "1s,5s");
        // Strings that would read back as another type, or as nothing, are quoted.
        assert_eq!(user_value(&s("1000")), "\"1000\"");
        assert_eq!(user_value(&s("true")), "\"true\"");
        assert_eq!(user_value(&s("")), "\"\"");
        assert_eq!(user_value(&List(vec![Int(1), s("5s")])), "[1, 5s]");
        assert_eq!(
            user_value(&Map(table(&[("a", Int(1)), ("b", Bool(false))]))),
            "{a: 1, b: false}"
        );
        let long = user_value(&s(&"a".repeat(1000)));
        assert!(long.ends_with("... (1000 bytes in all)"), "{long}");
    }
}
