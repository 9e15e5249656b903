//! How the CLI prints: deliveries for `warren consume` and `warren subscribe` (one readable
//! line, or one JSON object per line with `--json`), and the admin commands' tables and
//! `key: value` lines (from the typed results of [`crate::admin_types`]), with sizes,
//! durations and times made readable. Pure functions (only
//! [`emit`] and [`print_json`] write), so the formats are unit-tested.
//!
//! Tables are aligned by hand rather than with a table crate: the admin listings need only
//! left- or right-aligned columns of short text, and plain space-separated columns stay easy
//! to `grep`, `awk` and `cut`.

use std::io::Write;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::admin_types::JsonTable;
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
    acquired_count: u32,
    delivery_tag: u64,
    /// The entry's offset, for a delivery from a stream; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_offset: Option<u64>,
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
    /// AMQP's `type` property (set by AMQP publishers; Warren's clients may too).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<&'a str>,
}

/// A delivery as one JSON object: `exchange`, `routing_key`, `body` (+ `body_encoding`
/// `"base64"` for a binary body), `headers`, `message_id`, `correlation_id`, `redelivered`,
/// `delivery_count` (RabbitMQ's `x-delivery-count`), `acquired_count` (`x-acquired-count`),
/// `delivery_tag` and the other `properties`. `headers` are the message's as published: the
/// counts are fields, not headers (decisions.md).
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
        headers: table_json(&p.headers.to_table()),
        message_id: p.message_id.as_deref(),
        correlation_id: p.correlation_id.as_deref(),
        redelivered: delivery.redelivered,
        delivery_count: delivery.delivery_count,
        acquired_count: delivery.acquired_count,
        delivery_tag: delivery.delivery_tag,
        stream_offset: delivery.stream_offset,
        properties: PropertiesJson {
            persistent: p.persistent,
            content_type: p.content_type.as_deref(),
            content_encoding: p.content_encoding.as_deref(),
            reply_to: p.reply_to.as_deref(),
            timestamp: p.timestamp,
            expiration: p.expiration,
            priority: p.priority,
            kind: p.kind.as_deref(),
            user_id: p.user_id.as_deref(),
            app_id: p.app_id.as_deref(),
        },
    }
}

pub use crate::json::table_json;

/// A delivery as a readable line: `[routing_key] body`, then, when it was delivered before,
/// ` (redelivered, x-delivery-count=F, x-acquired-count=A)` with RabbitMQ's header names.
/// A body that is not UTF-8 is shown as `base64:...`. Control characters are escaped (as in
/// `dlq peek`), so one message is one line and a body cannot drive the terminal.
pub fn delivery_line(delivery: &Delivery) -> String {
    let body = match std::str::from_utf8(&delivery.body) {
        Ok(text) => one_line(text),
        Err(_) => format!("base64:{}", BASE64.encode(&delivery.body)),
    };
    let marker = if delivery.redelivered {
        format!(
            " (redelivered, x-delivery-count={}, x-acquired-count={})",
            delivery.delivery_count, delivery.acquired_count
        )
    } else {
        String::new()
    };
    format!("[{}] {body}{marker}", one_line(&delivery.routing_key))
}

/// Writes a delivery to stdout as one line (JSON with `json`) and flushes, so that once this
/// returns the line has left the process: `consume` and `get` settle a message only then.
///
/// # Errors
/// The write failed (`BrokenPipe` when the reader has gone).
pub fn write_delivery(delivery: &Delivery, json: bool) -> std::io::Result<()> {
    let line = if json {
        delivery_json_line(delivery)
    } else {
        delivery_line(delivery)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Writes `text` to stdout. A closed pipe (`warren queue list | head -1`) ends the output
/// quietly, as other Unix tools do.
///
/// # Errors
/// Writing to stdout failed for another reason.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Prints a server's admin JSON as-is (pretty, field names exactly the server's).
///
/// # Errors
/// Writing to stdout failed.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    emit(&format!("{}\n", pretty_json(value)))
}

/// `value` as pretty JSON.
pub fn pretty_json(value: &Value) -> String {
    // A `Value` always serializes: its map keys are strings.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned())
}

/// How a table column lines up its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a header row, columns separated by two spaces, no trailing spaces.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; control characters in its cells are escaped so a row stays one line.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    /// The header and the rows, each ending in a newline. An empty table is its header only.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), width)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, each ending in a newline.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let line = format!("{label:<width$} {}", one_line(value));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` with control characters (newlines, tabs, ...) escaped, so it prints as one line.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// At most `max` characters of `text`, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A JSON scalar as a cell: strings as themselves, `null` (or absent) as `-`, arrays and
/// objects as compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An optional field as a cell: the value, or `-` when it is `None` (`null` on the wire).
pub fn opt_cell<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A field table as `key=value` pairs separated by spaces; `-` when empty.
pub fn arguments_cell(arguments: &JsonTable) -> String {
    if arguments.is_empty() {
        return "-".to_owned();
    }
    arguments
        .iter()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `yes` or `no`.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// An exchange name, with the default exchange (`""`) spelled out.
pub fn exchange_name(name: &str) -> String {
    if name.is_empty() {
        "(default)".to_owned()
    } else {
        name.to_owned()
    }
}

/// A per-second rate with one decimal.
pub fn rate(value: f64) -> String {
    format!("{value:.1}")
}

/// A byte count in B, KiB, MiB, GiB or TiB, with one decimal above bytes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in its two largest units: `45s`, `2m 13s`, `3h 0m`, `4d 7h`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds:
/// `2024-05-01T12:00:00.123Z`. Negative times (before 1970) clamp to the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Optional epoch milliseconds as [`rfc3339_ms`] (`-` when `None`).
pub fn time_cell(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), rfc3339_ms)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Every leaf of `value` as `(path.to.leaf, value)`, objects in their key order, for
/// printing counters generically.
pub fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, v, out);
            }
        }
        other => out.push((prefix.to_owned(), cell(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use warren_protocol::Properties;
    use warren_protocol::{FieldTable, FieldValue};

    fn delivery(body: &'static [u8]) -> Delivery {
        Delivery {
            consumer_tag: Some("c".into()),
            delivery_tag: 3,
            redelivered: false,
            delivery_count: 0,
            acquired_count: 0,
            exchange: "logs".into(),
            routing_key: "app.info".into(),
            properties: Properties::default(),
            body: Bytes::from_static(body),
            message_count: None,
            stream_offset: None,
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
                "acquired_count": 0,
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
        d.properties
            .headers
            .insert("x-death", FieldValue::List(vec![FieldValue::Map(inner)]));
        d.properties.headers.insert("ratio", FieldValue::Float(0.5));
        d.properties
            .headers
            .insert("bad", FieldValue::Float(f64::NAN));
        d.properties.headers.insert("ok", FieldValue::Bool(true));
        d.properties
            .headers
            .insert("s", FieldValue::String("v".into()));
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
        d.delivery_count = 1;
        d.acquired_count = 2;
        assert_eq!(
            delivery_line(&d),
            "[app.info] hello (redelivered, x-delivery-count=1, x-acquired-count=2)"
        );
    }

    /// Regression: plain `consume` printed bodies raw, so a body with a newline read as two
    /// messages and one with escape sequences could drive the terminal.
    #[test]
    fn readable_lines_escape_control_characters() {
        let mut d = delivery(b"two\nlines \x1b[31mred\r");
        d.routing_key = "k\tey".into();
        let line = delivery_line(&d);
        assert_eq!(line, "[k\\tey] two\\nlines \\u{1b}[31mred\\r");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("READY", Align::Right),
            ("X", Align::Left),
        ]);
        t.row(vec!["jobs".into(), "7".into(), String::new()]);
        t.row(vec![
            "a-long-name".into(),
            "12345".into(),
            "line\nbreak".into(),
        ]);
        assert_eq!(
            t.render(),
            "NAME         READY  X\n\
             jobs             7\n\
             a-long-name  12345  line\\nbreak\n"
        );
        assert_eq!(Table::new(&[("A", Align::Left)]).render(), "A\n");
    }

    #[test]
    fn key_values_align_their_values() {
        let text = key_values(&[
            ("version".into(), "0.1.0".into()),
            ("store size".into(), "1.5 MiB".into()),
            ("empty".into(), String::new()),
        ]);
        assert_eq!(text, "version:    0.1.0\nstore size: 1.5 MiB\nempty:\n");
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(133), "2m 13s");
        assert_eq!(human_duration(3 * 3600 + 59), "3h 0m");
        assert_eq!(human_duration(4 * 86_400 + 7 * 3600 + 5), "4d 7h");
    }

    #[test]
    fn epoch_milliseconds_format_as_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_714_564_800_000), "2024-05-01T12:00:00.000Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_cell(None), "-");
    }

    #[test]
    fn cells_show_json_scalars_plainly() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("q")), "q");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(["a"])), r#"["a"]"#);
        assert_eq!(exchange_name(""), "(default)");
        assert_eq!(exchange_name("logs"), "logs");
        assert_eq!(yes_no(true), "yes");
        assert_eq!(rate(2.25), "2.2");
        assert_eq!(opt_cell(None::<u64>), "-");
        assert_eq!(opt_cell(Some("")), "");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(one_line("a\tb"), "a\\tb");
    }

    #[test]
    fn flatten_names_leaves_by_their_path() {
        let mut out = Vec::new();
        flatten(
            "totals",
            &json!({"acked": 1, "dead_lettered": {"expired": 2}}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                ("totals.acked".to_owned(), "1".to_owned()),
                ("totals.dead_lettered.expired".to_owned(), "2".to_owned())
            ]
        );
    }
}
