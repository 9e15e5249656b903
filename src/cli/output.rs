//! How `warren consume` and `warren subscribe` print a delivery: one readable line, or one
//! JSON object per line (`--json`). Pure functions, so the formats are unit-tested.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::client::Delivery;

/// The JSON form of a delivery. Field order is the printing order.
#[derive(Debug, Serialize)]
struct DeliveryJson<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    /// UTF-8 text, or base64 when the body is not valid UTF-8.
    body: String,
    /// `"base64"` when `body` is base64; absent for UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
    headers: Value,
    message_id: Option<&'a str>,
    correlation_id: Option<&'a str>,
    redelivered: bool,
    delivery_count: u32,
    delivery_tag: u64,
    properties: PropertiesJson<'a>,
}

/// The remaining properties, with absent ones left out.
#[derive(Debug, Serialize)]
struct PropertiesJson<'a> {
    persistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_encoding: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
}

/// A delivery as one JSON object: `exchange`, `routing_key`, `body` (+ `body_encoding`
/// `"base64"` for a binary body), `headers`, `message_id`, `correlation_id`, `redelivered`,
/// `delivery_count`, `delivery_tag` and the other `properties`.
pub fn delivery_json(delivery: &Delivery) -> Value {
    // Serializing strings, numbers and `Value`s cannot fail; `Null` would only hide a bug,
    // never user data.
    serde_json::to_value(view(delivery)).unwrap_or(Value::Null)
}

/// A delivery as one JSON line (no trailing newline), fields in the order
/// [`delivery_json`] lists them.
pub fn delivery_json_line(delivery: &Delivery) -> String {
    serde_json::to_string(&view(delivery)).unwrap_or_else(|_| "null".to_owned())
}

fn view(delivery: &Delivery) -> DeliveryJson<'_> {
    let (body, body_encoding) = match std::str::from_utf8(&delivery.body) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (BASE64.encode(&delivery.body), Some("base64")),
    };
    let p = &delivery.properties;
    DeliveryJson {
        exchange: &delivery.exchange,
        routing_key: &delivery.routing_key,
        body,
        body_encoding,
        headers: table_json(&p.headers),
        message_id: p.message_id.as_deref(),
        correlation_id: p.correlation_id.as_deref(),
        redelivered: delivery.redelivered,
        delivery_count: delivery.delivery_count,
        delivery_tag: delivery.delivery_tag,
        properties: PropertiesJson {
            persistent: p.persistent,
            content_type: p.content_type.as_deref(),
            content_encoding: p.content_encoding.as_deref(),
            reply_to: p.reply_to.as_deref(),
            timestamp: p.timestamp,
            expiration: p.expiration,
            priority: p.priority,
        },
    }
}

pub use crate::json::table_json;

/// A delivery as a readable line: `[routing_key] body`, then ` (redelivered)` when it was.
/// A body that is not UTF-8 is shown as `base64:...`.
pub fn delivery_line(delivery: &Delivery) -> String {
    let body = match std::str::from_utf8(&delivery.body) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", BASE64.encode(&delivery.body)),
    };
    let marker = if delivery.redelivered {
        " (redelivered)"
    } else {
        ""
    };
    format!("[{}] {body}{marker}", delivery.routing_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::{FieldTable, FieldValue};
    use bytes::Bytes;
    use serde_json::json;
    use warren_protocol::Properties;

    fn delivery(body: &'static [u8]) -> Delivery {
        Delivery {
            consumer_tag: Some("c".into()),
            delivery_tag: 3,
            redelivered: false,
            delivery_count: 0,
            exchange: "logs".into(),
            routing_key: "app.info".into(),
            properties: Properties::default(),
            body: Bytes::from_static(body),
            message_count: None,
        }
    }

    #[test]
    fn utf8_bodies_are_text() {
        let mut d = delivery("héllo".as_bytes());
        d.properties.message_id = Some("m-1".into());
        d.properties.persistent = true;
        d.properties.content_type = Some("text/plain".into());
        assert_eq!(
            delivery_json(&d),
            json!({
                "exchange": "logs",
                "routing_key": "app.info",
                "body": "héllo",
                "headers": {},
                "message_id": "m-1",
                "correlation_id": null,
                "redelivered": false,
                "delivery_count": 0,
                "delivery_tag": 3,
                "properties": {"persistent": true, "content_type": "text/plain"},
            })
        );
    }

    #[test]
    fn binary_bodies_are_base64() {
        let d = delivery(&[0xff, 0x00, 0x80]);
        let v = delivery_json(&d);
        assert_eq!(v["body"], "/wCA");
        assert_eq!(v["body_encoding"], "base64");
        assert_eq!(delivery_line(&d), "[app.info] base64:/wCA");
    }

    #[test]
    fn nested_headers_become_json() {
        let mut inner = FieldTable::new();
        inner.insert("count".into(), FieldValue::Int(2));
        inner.insert("raw".into(), FieldValue::Bytes(Bytes::from_static(b"hi")));
        let mut d = delivery(b"x");
        d.properties.headers.insert(
            "x-death".into(),
            FieldValue::List(vec![FieldValue::Map(inner)]),
        );
        d.properties
            .headers
            .insert("ratio".into(), FieldValue::Float(0.5));
        d.properties
            .headers
            .insert("bad".into(), FieldValue::Float(f64::NAN));
        d.properties
            .headers
            .insert("ok".into(), FieldValue::Bool(true));
        d.properties
            .headers
            .insert("s".into(), FieldValue::String("v".into()));
        assert_eq!(
            delivery_json(&d)["headers"],
            json!({
                "x-death": [{"count": 2, "raw": "aGk="}],
                "ratio": 0.5,
                "bad": null,
                "ok": true,
                "s": "v",
            })
        );
    }

    #[test]
    fn json_lines_keep_field_order() {
        let line = delivery_json_line(&delivery(b"x"));
        assert!(
            line.starts_with(r#"{"exchange":"logs","routing_key":"app.info","body":"x","#),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn readable_lines_mark_redeliveries() {
        let mut d = delivery(b"hello");
        assert_eq!(delivery_line(&d), "[app.info] hello");
        d.redelivered = true;
        assert_eq!(delivery_line(&d), "[app.info] hello (redelivered)");
    }
}
