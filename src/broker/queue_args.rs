//! Queue arguments: the `x-` entries of a queue declaration's argument table, parsed and
//! validated into a typed [`QueueArgs`].
//!
//! `queue.declare` carries its arguments as a [`FieldTable`]. The broker stores that table as
//! given (so a redeclaration can be compared with it) and calls [`QueueArgs::parse`] once per
//! declaration; the queue then reads its limits from the typed struct. A value that is out of
//! range or of the wrong type refuses the whole declaration with an [`InvalidQueueArgument`]
//! naming the argument and the value.
//!
//! The argument names are RabbitMQ's, so queue definitions port over:
//!
//! | argument | value |
//! |---|---|
//! | `x-dead-letter-exchange` | string; `""` is the default exchange |
//! | `x-dead-letter-routing-key` | string; only together with `x-dead-letter-exchange` |
//! | `x-message-ttl` | integer ms, `0..=315_360_000_000` (ten years) |
//! | `x-expires` | integer ms, `>= 1` |
//! | `x-max-length` | integer messages, `>= 0` |
//! | `x-max-length-bytes` | integer bytes, `>= 0` |
//! | `x-overflow` | `"drop-head"`, `"reject-publish"` or `"reject-publish-dlx"` |
//! | `x-delivery-limit` | integer, `0..=u32::MAX`; `-1` is no limit |
//! | `x-consumer-timeout` | integer ms, `>= 1` |
//! | `x-retry-backoff` | `"1s,5s,30s"`, or a list of integer ms and duration strings (Warren's own) |
//! | `x-single-active-consumer` | boolean |
//! | `x-max-priority` | integer, `1..=255`: a priority queue (docs/queues.md) |
//! | `x-message-deduplication`, `x-deduplication-window`, `x-deduplication-header`, `x-cache-size`, `x-cache-ttl` | see `dedup.rs` and docs/deduplication.md |
//!
//! Integers must be sent as integers, of any width (`u8` to `i64`, as RabbitMQ takes them):
//! the string `"1000"` is refused, not converted. A float with an integral value (`1000.0`) is
//! accepted, because some RabbitMQ clients send doubles.
//!
//! `x-queue-type` is `"classic"` (the default) or `"stream"`: an append-only log read from
//! any offset (docs/streams.md). A stream takes `x-max-length-bytes` and `x-max-age` as
//! retention limits, and `x-stream-max-segment-size-bytes` (the size of its retention
//! chunks); the classic arguments that do not apply to a log (TTL, dead-lettering, delivery
//! limits, overflow, priorities, ...) are refused at declare time ([`QueueArgs::parse`]), and
//! the stream arguments are refused on a classic queue.
//!
//! Arguments that do not start with `x-` are not ours to interpret and are ignored here. Any
//! other `x-` argument (`x-queue-mode`, `x-queue-master-locator`, `x-queue-type=quorum`,
//! ...) is refused by [`QueueArgs::parse`] naming it, unlike RabbitMQ, which stores and ignores
//! what it does not know: a queue that silently lacks the priority or single-consumer
//! behaviour its declaration asked for is a bug found in production, not at declare time
//! (docs/decisions.md). Queues stored by an older Warren that accepted such arguments still
//! load: recovery uses [`QueueArgs::parse_known`] and logs [`unsupported_arguments`].

use warren_protocol::{FieldTable, FieldValue};

/// The most entries `x-retry-backoff` may list; a longer schedule is almost certainly a mistake,
/// and the cap bounds what one declaration can make the broker store.
pub const MAX_RETRY_BACKOFF_ENTRIES: usize = 100;

/// The longest TTL, queue `x-message-ttl` or per-message `expiration`: ten years in
/// milliseconds, RabbitMQ's limit.
pub const MAX_TTL_MS: u64 = 315_360_000_000;

const X_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
const X_DEAD_LETTER_ROUTING_KEY: &str = "x-dead-letter-routing-key";
const X_MESSAGE_TTL: &str = "x-message-ttl";
const X_EXPIRES: &str = "x-expires";
const X_MAX_LENGTH: &str = "x-max-length";
const X_MAX_LENGTH_BYTES: &str = "x-max-length-bytes";
const X_OVERFLOW: &str = "x-overflow";
const X_DELIVERY_LIMIT: &str = "x-delivery-limit";
const X_CONSUMER_TIMEOUT: &str = "x-consumer-timeout";
const X_RETRY_BACKOFF: &str = "x-retry-backoff";
const X_QUEUE_TYPE: &str = "x-queue-type";
const X_SINGLE_ACTIVE_CONSUMER: &str = "x-single-active-consumer";
const X_MAX_PRIORITY: &str = "x-max-priority";
const X_MAX_AGE: &str = "x-max-age";
const X_STREAM_MAX_SEGMENT_SIZE_BYTES: &str = "x-stream-max-segment-size-bytes";

/// The highest `x-max-priority`: a message's priority is one byte (RabbitMQ's limit too).
pub const MAX_PRIORITY: u8 = u8::MAX;

/// Every `x-` argument a queue declaration may carry; any other `x-` argument is refused.
const SUPPORTED_ARGS: [&str; 20] = [
    X_MAX_AGE,
    X_STREAM_MAX_SEGMENT_SIZE_BYTES,
    super::dedup::X_MESSAGE_DEDUPLICATION,
    super::dedup::X_DEDUPLICATION_WINDOW,
    super::dedup::X_DEDUPLICATION_HEADER,
    super::dedup::X_CACHE_SIZE,
    super::dedup::X_CACHE_TTL,
    X_DEAD_LETTER_EXCHANGE,
    X_DEAD_LETTER_ROUTING_KEY,
    X_MESSAGE_TTL,
    X_EXPIRES,
    X_MAX_LENGTH,
    X_MAX_LENGTH_BYTES,
    X_OVERFLOW,
    X_DELIVERY_LIMIT,
    X_CONSUMER_TIMEOUT,
    X_RETRY_BACKOFF,
    X_QUEUE_TYPE,
    X_SINGLE_ACTIVE_CONSUMER,
    X_MAX_PRIORITY,
];

/// RabbitMQ's name for its ordinary queues, the default `x-queue-type`.
const CLASSIC_QUEUE_TYPE: &str = "classic";

/// The `x-queue-type` of an append-only stream (docs/streams.md).
const STREAM_QUEUE_TYPE: &str = "stream";

/// What kind of queue a declaration asks for (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// A classic queue: messages leave when acknowledged.
    #[default]
    Classic,
    /// A stream: an append-only log; reading never removes (docs/streams.md).
    Stream,
}

impl QueueType {
    /// The `x-queue-type` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => CLASSIC_QUEUE_TYPE,
            QueueType::Stream => STREAM_QUEUE_TYPE,
        }
    }
}

/// The classic-queue arguments a stream refuses, with why they do not apply.
const NOT_FOR_STREAMS: [(&str, &str); 15] = [
    (super::dedup::X_CACHE_TTL, "streams do not deduplicate yet (docs/streams.md)"),
    (X_MESSAGE_TTL, "a stream keeps messages by x-max-age, not per-message TTL"),
    (X_EXPIRES, "a stream is not deleted for being unused"),
    (X_DEAD_LETTER_EXCHANGE, "nothing leaves a stream to be dead-lettered"),
    (X_DEAD_LETTER_ROUTING_KEY, "nothing leaves a stream to be dead-lettered"),
    (X_DELIVERY_LIMIT, "a stream does not requeue, so it has no delivery limit"),
    (X_OVERFLOW, "a stream never refuses a publish; x-max-length-bytes and x-max-age trim its oldest entries"),
    (X_MAX_LENGTH, "a stream is limited by x-max-length-bytes and x-max-age"),
    (X_RETRY_BACKOFF, "a stream does not requeue"),
    (X_SINGLE_ACTIVE_CONSUMER, "every stream consumer reads independently"),
    (X_MAX_PRIORITY, "a stream is read in offset order"),
    (super::dedup::X_MESSAGE_DEDUPLICATION, "streams do not deduplicate yet (docs/streams.md)"),
    (super::dedup::X_DEDUPLICATION_WINDOW, "streams do not deduplicate yet (docs/streams.md)"),
    (super::dedup::X_DEDUPLICATION_HEADER, "streams do not deduplicate yet (docs/streams.md)"),
    (super::dedup::X_CACHE_SIZE, "streams do not deduplicate yet (docs/streams.md)"),
];

/// Why an `x-` argument Warren does not implement is refused, for queues and exchanges alike.
pub const NOT_IMPLEMENTED_REASON: &str =
    "Warren does not implement this argument yet; declare without it";

/// The arguments [`QueueArgs::parse`] reads as integers, for clients (the CLI's `--arg`) that
/// must send them typed when the user gives only text.
pub const INTEGER_ARGUMENTS: [&str; 10] = [
    X_STREAM_MAX_SEGMENT_SIZE_BYTES,
    super::dedup::X_CACHE_SIZE,
    super::dedup::X_CACHE_TTL,
    X_MESSAGE_TTL,
    X_EXPIRES,
    X_MAX_LENGTH,
    X_MAX_LENGTH_BYTES,
    X_DELIVERY_LIMIT,
    X_CONSUMER_TIMEOUT,
    X_MAX_PRIORITY,
];

/// The arguments [`QueueArgs::parse`] reads as booleans, for clients that type text values.
pub const BOOLEAN_ARGUMENTS: [&str; 2] = [
    X_SINGLE_ACTIVE_CONSUMER,
    super::dedup::X_MESSAGE_DEDUPLICATION,
];

/// The arguments [`QueueArgs::parse`] reads as strings (`x-retry-backoff` also takes a list,
/// but its string form says everything the list can).
pub const STRING_ARGUMENTS: [&str; 7] = [
    X_QUEUE_TYPE,
    X_MAX_AGE,
    super::dedup::X_DEDUPLICATION_HEADER,
    X_DEAD_LETTER_EXCHANGE,
    X_DEAD_LETTER_ROUTING_KEY,
    X_OVERFLOW,
    X_RETRY_BACKOFF,
];

/// 2^64, the first float that does not fit in a `u64` (exactly representable as an `f64`).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// How many characters of a string value an error message quotes before cutting it short, so
/// a hostile megabyte-long argument does not come back in the error reply.
const MAX_QUOTED_CHARS: usize = 64;

/// Why a queue argument was refused: names the argument and says what was wrong with the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid arg '{arg}': {reason}")]
pub struct InvalidQueueArgument {
    /// The argument's name, e.g. `x-message-ttl`.
    pub arg: String,
    /// What is wrong with its value, quoting the value.
    pub reason: String,
}

impl InvalidQueueArgument {
    /// The refusal a client sees, naming what the argument belongs to (`queue 'work'`).
    pub fn refusal(&self, of: impl std::fmt::Display) -> crate::error::BrokerError {
        crate::error::BrokerError::invalid_arg(&self.arg, of, &self.reason)
    }
}

fn invalid(arg: &str, reason: impl Into<String>) -> InvalidQueueArgument {
    InvalidQueueArgument {
        arg: arg.to_owned(),
        reason: reason.into(),
    }
}

/// What a queue does when a publish would take it past `x-max-length` or `x-max-length-bytes`
/// (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest messages to make room. RabbitMQ's default.
    #[default]
    DropHead,
    /// Refuse the new message; a publisher using confirms gets a nack.
    RejectPublish,
    /// Refuse the new message as [`Overflow::RejectPublish`] does, and dead-letter it.
    RejectPublishDlx,
}

impl Overflow {
    /// The `x-overflow` value naming this behaviour: `"drop-head"`, `"reject-publish"` or
    /// `"reject-publish-dlx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }

    fn from_name(name: &str) -> Option<Overflow> {
        [
            Overflow::DropHead,
            Overflow::RejectPublish,
            Overflow::RejectPublishDlx,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

/// A queue's `x-` arguments, typed and validated. `None` means the argument was not given.
/// See the module docs for the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueArgs {
    /// `x-dead-letter-exchange`: where dead-lettered messages are republished. `Some("")` is
    /// the default exchange.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: replaces the message's routing key when it is
    /// dead-lettered; `None` keeps the original key.
    pub dead_letter_routing_key: Option<String>,
    /// `x-message-ttl`: how long a message may wait in the queue. `Some(0)` expires a message
    /// unless it can be delivered at once.
    pub message_ttl_ms: Option<u64>,
    /// `x-expires`: how long the queue may go unused (no consumers, no `get`, no redeclare)
    /// before it is deleted. Never 0.
    pub expires_ms: Option<u64>,
    /// `x-max-length`: the most ready messages the queue holds; see [`QueueArgs::overflow`].
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: the most body bytes of ready messages the queue holds.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`: what happens at `max_length` / `max_length_bytes`.
    pub overflow: Overflow,
    /// `x-delivery-limit`: how many failed deliveries (a reject with requeue, or a connection
    /// that ended with the message unacked; never a nack) a message survives; after that it is dead-lettered, or
    /// dropped without a dead-letter exchange. `Some(0)` dead-letters on the first failure;
    /// `-1`, like no argument, is `None`: no limit.
    pub delivery_limit: Option<u32>,
    /// `x-consumer-timeout`: how long a delivery may stay unacked before the broker gives up
    /// on its consumer (RabbitMQ closes the channel). Never 0.
    pub consumer_timeout_ms: Option<u64>,
    /// `x-retry-backoff`: how long a message whose delivery failed (not one returned by a nack)
    /// waits before redelivery, by failure count; see [`QueueArgs::retry_delay_ms`]. Never empty
    /// when parsed.
    pub retry_backoff_ms: Option<Vec<u64>>,
    /// `x-single-active-consumer`: only one consumer (the longest attached) receives at a
    /// time; the others wait to take over, in the order they were attached.
    pub single_active_consumer: bool,
    /// `x-max-priority`: a priority queue with levels `0..=max`; a message's priority
    /// (absent: 0) above the max counts as the max. `None`: a plain FIFO queue, where
    /// priorities are ignored. Never 0.
    pub max_priority: Option<u8>,
    /// `x-message-deduplication` and its window: a message whose key the queue accepted
    /// within the window does not enter it again (docs/deduplication.md).
    pub dedup: Option<super::dedup::DedupConfig>,
    /// `x-queue-type`: classic (default) or stream.
    pub queue_type: QueueType,
    /// `x-max-age` (streams only): entries older than this are trimmed, in whole chunks.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes` (streams only): the body bytes of one retention
    /// chunk; `None`: the default (`broker/stream`).
    pub stream_chunk_bytes: Option<u64>,
}

impl QueueArgs {
    /// Parses and validates the `x-` arguments of a queue declaration. Arguments not starting
    /// with `x-` are ignored; an `x-` argument Warren does not implement is refused.
    ///
    /// # Errors
    /// The first `x-` argument (in key order) that Warren does not implement, or an
    /// `x-queue-type` other than `"classic"`; then the first argument, in the order of
    /// [`QueueArgs`]'s fields, whose value is of the wrong type or out of range; also
    /// `x-dead-letter-routing-key` given without `x-dead-letter-exchange`, which RabbitMQ
    /// refuses too; last, an `x-message-ttl` over [`MAX_TTL_MS`].
    pub fn parse(args: &FieldTable) -> Result<QueueArgs, InvalidQueueArgument> {
        let queue_type = queue_type_arg(args)?;
        if let Some(arg) = unsupported_arguments(args).first() {
            return Err(invalid(arg, NOT_IMPLEMENTED_REASON));
        }
        match queue_type {
            QueueType::Stream => {
                if let Some((arg, why)) = NOT_FOR_STREAMS
                    .iter()
                    .find(|(arg, _)| args.get(*arg).is_some())
                {
                    return Err(invalid(arg, format!("not allowed on a stream: {why}")));
                }
            }
            QueueType::Classic => {
                for arg in [X_MAX_AGE, X_STREAM_MAX_SEGMENT_SIZE_BYTES] {
                    if args.get(arg).is_some() {
                        return Err(invalid(
                            arg,
                            "only streams take it (declare with x-queue-type \"stream\")",
                        ));
                    }
                }
            }
        }
        let parsed = Self::parse_known(args)?;
        // Checked here, not in `parse_known`: a queue an older Warren stored with a longer
        // TTL keeps it (and its other arguments) when it loads.
        if let Some(ms) = parsed.message_ttl_ms.filter(|ms| *ms > MAX_TTL_MS) {
            return Err(invalid(X_MESSAGE_TTL, ttl_too_long(ms)));
        }
        Ok(parsed)
    }

    /// Parses the arguments Warren implements and skips every other one, unsupported `x-`
    /// arguments and `x-queue-type` included. For queues recovered from the store, which an
    /// older Warren may have accepted with arguments [`QueueArgs::parse`] now refuses: they
    /// must still load.
    ///
    /// # Errors
    /// As [`QueueArgs::parse`], for the arguments Warren implements.
    pub fn parse_known(args: &FieldTable) -> Result<QueueArgs, InvalidQueueArgument> {
        let dead_letter_exchange = string_arg(args, X_DEAD_LETTER_EXCHANGE)?;
        let dead_letter_routing_key = string_arg(args, X_DEAD_LETTER_ROUTING_KEY)?;
        if let (Some(key), None) = (&dead_letter_routing_key, &dead_letter_exchange) {
            return Err(invalid(
                X_DEAD_LETTER_ROUTING_KEY,
                format!(
                    "{} given without {X_DEAD_LETTER_EXCHANGE}; a dead-letter routing key \
                     needs a dead-letter exchange",
                    quoted(key)
                ),
            ));
        }
        let delivery_limit = match delivery_limit_arg(args)? {
            None => None,
            Some(limit) => Some(u32::try_from(limit).map_err(|_| {
                invalid(
                    X_DELIVERY_LIMIT,
                    format!("must be at most {}, got {limit}", u32::MAX),
                )
            })?),
        };
        Ok(QueueArgs {
            dead_letter_exchange,
            dead_letter_routing_key,
            message_ttl_ms: count_arg(args, X_MESSAGE_TTL, "milliseconds")?,
            expires_ms: positive_ms_arg(args, X_EXPIRES)?,
            max_length: count_arg(args, X_MAX_LENGTH, "messages")?,
            max_length_bytes: count_arg(args, X_MAX_LENGTH_BYTES, "bytes")?,
            overflow: overflow_arg(args)?,
            delivery_limit,
            consumer_timeout_ms: positive_ms_arg(args, X_CONSUMER_TIMEOUT)?,
            retry_backoff_ms: args
                .get(X_RETRY_BACKOFF)
                .map(|value| {
                    retry_backoff(value).map_err(|reason| invalid(X_RETRY_BACKOFF, reason))
                })
                .transpose()?,
            single_active_consumer: bool_arg(args, X_SINGLE_ACTIVE_CONSUMER)?,
            max_priority: max_priority_arg(args)?,
            dedup: super::dedup::parse(args)?,
            queue_type: queue_type_arg(args).unwrap_or_default(),
            max_age_ms: args
                .get(X_MAX_AGE)
                .map(|v| match v {
                    FieldValue::String(t) => {
                        parse_max_age_ms(t).map_err(|reason| invalid(X_MAX_AGE, reason))
                    }
                    other => Err(invalid(
                        X_MAX_AGE,
                        format!(
                            "expected a string like \"7D\" or \"12h\", got {}",
                            describe(other)
                        ),
                    )),
                })
                .transpose()?,
            stream_chunk_bytes: match count_arg(args, X_STREAM_MAX_SEGMENT_SIZE_BYTES, "bytes")? {
                Some(0) => {
                    return Err(invalid(
                        X_STREAM_MAX_SEGMENT_SIZE_BYTES,
                        "must be at least 1",
                    ))
                }
                n => n,
            },
        })
    }

    /// The requeue delay for a message whose delivery has failed `failures` times (>= 1): the
    /// backoff entry `failures - 1`, the last entry once the list is exhausted; `None` without
    /// `x-retry-backoff`. `failures == 0` is treated as 1, and an empty list (which
    /// [`QueueArgs::parse`] never produces) as no backoff.
    pub fn retry_delay_ms(&self, failures: u32) -> Option<u64> {
        let delays = self.retry_backoff_ms.as_deref()?;
        let index = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
        delays.get(index).or_else(|| delays.last()).copied()
    }

    /// Whether dead-lettering is configured: true when `x-dead-letter-exchange` is set (to
    /// any exchange, the default one included). Without it, messages that would be
    /// dead-lettered are dropped.
    pub fn dead_letters(&self) -> bool {
        self.dead_letter_exchange.is_some()
    }
}

/// The `x-` arguments in `args`, in key order, that Warren does not implement for queues:
/// unknown ones whatever their value, and `x-queue-type` unless it is `"classic"`. Empty for
/// every table [`QueueArgs::parse`] accepts.
pub fn unsupported_arguments(args: &FieldTable) -> Vec<&str> {
    args.iter()
        .filter(|(k, v)| {
            if k.as_str() == X_QUEUE_TYPE {
                v.as_str() != Some(CLASSIC_QUEUE_TYPE) && v.as_str() != Some(STREAM_QUEUE_TYPE)
            } else {
                k.starts_with("x-") && !SUPPORTED_ARGS.contains(&k.as_str())
            }
        })
        .map(|(k, _)| k.as_str())
        .collect()
}

/// `x-queue-type`: `"classic"` (the default) or `"stream"`; `"quorum"` is named as not
/// supported, anything else refused.
fn queue_type_arg(args: &FieldTable) -> Result<QueueType, InvalidQueueArgument> {
    match args.get(X_QUEUE_TYPE) {
        None => Ok(QueueType::Classic),
        Some(FieldValue::String(t)) if t == CLASSIC_QUEUE_TYPE => Ok(QueueType::Classic),
        Some(FieldValue::String(t)) if t == STREAM_QUEUE_TYPE => Ok(QueueType::Stream),
        Some(FieldValue::String(t)) if t == "quorum" => Err(invalid(
            X_QUEUE_TYPE,
            "quorum queues are not supported yet; Warren has \"classic\" queues and \"stream\"s",
        )),
        Some(other) => Err(invalid(
            X_QUEUE_TYPE,
            format!(
                "expected \"classic\" or \"stream\", got {}",
                describe(other)
            ),
        )),
    }
}

/// Parses `x-max-age` as RabbitMQ spells it: a whole number and one unit, `Y` (365 days),
/// `M` (30 days), `D`, `h`, `m` or `s`, e.g. `7D`, `12h`. Returns milliseconds, never 0.
///
/// # Errors
/// A message quoting the text: no unit, an unknown unit, not a whole number, zero, or too
/// long to count in milliseconds.
pub fn parse_max_age_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let unit_ms: u64 = match t.chars().last() {
        Some('Y') => 365 * 86_400_000,
        Some('M') => 30 * 86_400_000,
        Some('D') => 86_400_000,
        Some('h') => 3_600_000,
        Some('m') => 60_000,
        Some('s') => 1_000,
        _ => {
            return Err(format!(
                "{} has no unit: give a whole number and one of Y, M, D, h, m, s (e.g. \"7D\", \"12h\")",
                quoted(text)
            ))
        }
    };
    let number = &t[..t.len() - 1];
    let n: u64 = number.parse().map_err(|_| {
        format!(
            "{} is not a whole number and a unit (e.g. \"7D\")",
            quoted(text)
        )
    })?;
    if n == 0 {
        return Err(format!("{} must be more than 0", quoted(text)));
    }
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{} is too long", quoted(text)))
}

/// Parses a duration like `250ms`, `1s`, `5s`, `2m`, `1h`, or a bare integer of milliseconds.
/// Used for `x-retry-backoff` and by the CLI.
///
/// The number is a whole, unsigned decimal; the unit is one of `ms`, `s`, `m`, `h`
/// (lowercase). Whitespace around the whole text is ignored.
///
/// # Errors
/// A message quoting the text: empty, not a whole number, an unknown unit, or more
/// milliseconds than fit in a `u64`.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            "empty duration: expected a whole number optionally followed by ms, s, m or h, \
             such as 250ms, 5s, 2m or 1h"
                .to_owned(),
        );
    }
    let unit = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
    // `unit` is a suffix of `trimmed`, so this always strips.
    let digits = trimmed.strip_suffix(unit).unwrap_or_default();
    let unit_ms: u64 = match unit {
        _ if digits.is_empty() => {
            return Err(format!(
                "invalid duration {}: expected a whole number optionally followed by ms, s, m \
                 or h, such as 250ms, 5s, 2m or 1h",
                quoted(text)
            ))
        }
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other if other.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(format!(
                "invalid duration {}: unknown unit {}; expected ms, s, m or h",
                quoted(text),
                quoted(other)
            ))
        }
        _ => {
            return Err(format!(
                "invalid duration {}: expected a whole number optionally followed by ms, s, m \
                 or h, such as 250ms, 5s, 2m or 1h",
                quoted(text)
            ))
        }
    };
    // `digits` is non-empty ASCII digits, so parsing can only fail by overflowing.
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| {
            format!(
                "invalid duration {}: too large, the maximum is {} ms",
                quoted(text),
                u64::MAX
            )
        })
}

/// An optional string argument.
/// The `x-consumer-timeout` argument of a `Consume` (integer ms, `>= 1`, as the queue's):
/// overrides the queue's and the server's for that consumer.
///
/// # Errors
/// A value of the wrong type or out of range, named as for a queue.
pub fn consumer_timeout_arg(args: &FieldTable) -> Result<Option<u64>, InvalidQueueArgument> {
    positive_ms_arg(args, X_CONSUMER_TIMEOUT)
}

/// An optional boolean argument; absent is `false`.
fn bool_arg(args: &FieldTable, arg: &str) -> Result<bool, InvalidQueueArgument> {
    match args.get(arg) {
        None => Ok(false),
        Some(FieldValue::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(
            arg,
            format!("expected a boolean, got {}", describe(other)),
        )),
    }
}

fn string_arg(args: &FieldTable, arg: &str) -> Result<Option<String>, InvalidQueueArgument> {
    match args.get(arg) {
        None => Ok(None),
        Some(FieldValue::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            arg,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

/// An optional integer argument `>= 0`; `unit` names what it counts, for the messages.
fn count_arg(
    args: &FieldTable,
    arg: &str,
    unit: &str,
) -> Result<Option<u64>, InvalidQueueArgument> {
    args.get(arg)
        .map(|value| non_negative_integer(value, unit).map_err(|reason| invalid(arg, reason)))
        .transpose()
}

/// `x-delivery-limit`: a count, or `-1` for no limit (RabbitMQ 4.x), which is the same as
/// leaving it out.
fn delivery_limit_arg(args: &FieldTable) -> Result<Option<u64>, InvalidQueueArgument> {
    match args.get(X_DELIVERY_LIMIT) {
        Some(v) if v.as_i128() == Some(-1) => Ok(None),
        Some(FieldValue::Float(f)) if *f == -1.0 => Ok(None),
        _ => count_arg(args, X_DELIVERY_LIMIT, "deliveries"),
    }
}

/// Why a TTL (queue `x-message-ttl` or a message's `expiration`) of `ms` is refused.
pub fn ttl_too_long(ms: u64) -> String {
    format!("must be at most {MAX_TTL_MS} ms (ten years), got {ms}")
}

/// An optional integer argument of milliseconds `>= 1`, where 0 would be meaningless.
fn positive_ms_arg(args: &FieldTable, arg: &str) -> Result<Option<u64>, InvalidQueueArgument> {
    match count_arg(args, arg, "milliseconds")? {
        Some(0) => Err(invalid(arg, "must be at least 1 ms, got 0")),
        other => Ok(other),
    }
}

/// `x-max-priority`: an integer `1..=255`, as RabbitMQ accepts.
fn max_priority_arg(args: &FieldTable) -> Result<Option<u8>, InvalidQueueArgument> {
    let Some(value) = args.get(X_MAX_PRIORITY) else {
        return Ok(None);
    };
    let out_of_range = || {
        invalid(
            X_MAX_PRIORITY,
            format!(
                "must be between 1 and {MAX_PRIORITY}, got {}",
                super::redeclare::user_value(value)
            ),
        )
    };
    let max = match value.as_i128() {
        // Said as a range, not "must not be negative": -1 is no "unlimited" here.
        Some(n) => u64::try_from(n).map_err(|_| out_of_range())?,
        None => non_negative_integer(value, "priority levels")
            .map_err(|reason| invalid(X_MAX_PRIORITY, reason))?,
    };
    match u8::try_from(max) {
        Ok(max) if max >= 1 => Ok(Some(max)),
        _ => Err(out_of_range()),
    }
}

fn overflow_arg(args: &FieldTable) -> Result<Overflow, InvalidQueueArgument> {
    match args.get(X_OVERFLOW) {
        None => Ok(Overflow::default()),
        Some(FieldValue::String(name)) => Overflow::from_name(name).ok_or_else(|| {
            invalid(
                X_OVERFLOW,
                format!(
                    "expected \"drop-head\", \"reject-publish\" or \"reject-publish-dlx\", got {}",
                    quoted(name)
                ),
            )
        }),
        Some(other) => Err(invalid(
            X_OVERFLOW,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

/// A value that must be a whole number `>= 0`: an `Int`, or a finite integral `Float`. The
/// error is the reason, for the caller to attach to an argument name.
fn non_negative_integer(value: &FieldValue, unit: &str) -> Result<u64, String> {
    // Integers of every width, as RabbitMQ takes them: clients send small values in small
    // types (`--arg x-max-priority:u8=10`, a 32-bit int from an AMQP client).
    if let Some(n) = value.as_i128() {
        return u64::try_from(n).map_err(|_| format!("must not be negative, got {n}"));
    }
    match value {
        FieldValue::Float(f) if f.is_finite() && f.fract() == 0.0 => {
            if *f < 0.0 {
                Err(format!("must not be negative, got {}", describe(value)))
            } else if *f >= TWO_POW_64 {
                Err(format!(
                    "must be at most {}, got {}",
                    u64::MAX,
                    describe(value)
                ))
            } else {
                // Integral and within 0..2^64, so the conversion is exact.
                Ok(*f as u64)
            }
        }
        other => Err(format!(
            "expected an integer number of {unit}, got {}",
            describe(other)
        )),
    }
}

/// `x-retry-backoff`: a string of comma-separated durations, or a list of integer
/// milliseconds and duration strings. The error is the reason.
fn retry_backoff(value: &FieldValue) -> Result<Vec<u64>, String> {
    let delays = match value {
        FieldValue::String(text) => {
            if text.trim().is_empty() {
                return Err(format!(
                    "must list at least one delay, got {}",
                    describe(value)
                ));
            }
            let count = text.split(',').count();
            if count > MAX_RETRY_BACKOFF_ENTRIES {
                return Err(too_many_delays(count));
            }
            text.split(',')
                .enumerate()
                .map(|(i, entry)| {
                    parse_duration_ms(entry).map_err(|e| format!("entry {}: {e}", i + 1))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        // A lone number (what `--arg x-retry-backoff=1000` gives) is a one-entry schedule.
        v if is_number(v) => vec![backoff_entry(value)?],
        FieldValue::List(items) => {
            if items.len() > MAX_RETRY_BACKOFF_ENTRIES {
                return Err(too_many_delays(items.len()));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| backoff_entry(item).map_err(|e| format!("entry {}: {e}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?
        }
        other => {
            return Err(format!(
                "expected a list of delays or a string of comma-separated durations such as \
                 \"1s,5s,30s\", got {}",
                describe(other)
            ))
        }
    };
    if delays.is_empty() {
        return Err(format!(
            "must list at least one delay, got {}",
            describe(value)
        ));
    }
    Ok(delays)
}

fn backoff_entry(item: &FieldValue) -> Result<u64, String> {
    match item {
        FieldValue::String(text) => parse_duration_ms(text),
        v if is_number(v) => non_negative_integer(item, "milliseconds"),
        other => Err(format!(
            "expected an integer number of milliseconds or a duration string such as \"5s\", \
             got {}",
            describe(other)
        )),
    }
}

/// An integer of any width or a 64-bit float: what a count or a duration in ms may be sent as.
fn is_number(value: &FieldValue) -> bool {
    value.as_i128().is_some() || matches!(value, FieldValue::Float(_))
}

fn too_many_delays(count: usize) -> String {
    format!("at most {MAX_RETRY_BACKOFF_ENTRIES} delays are allowed, got {count}")
}

/// Describes a value for an error message: its type and, for scalars, the value itself.
fn describe(value: &FieldValue) -> String {
    match value {
        FieldValue::String(s) => format!("the string {}", quoted(s)),
        FieldValue::Int(n) => format!("an integer {n}"),
        // Debug keeps the `.0` (`1000.0`), so a float reads as one.
        FieldValue::Float(f) => format!("a float {f:?}"),
        FieldValue::Bool(b) => format!("a boolean {b}"),
        FieldValue::Bytes(b) => format!("binary data of {}", plural(b.len(), "byte")),
        FieldValue::List(items) => format!("a list of {}", plural(items.len(), "value")),
        FieldValue::Map(table) => format!("a table of {}", plural(table.len(), "entry")),
        FieldValue::Void => "void (no value)".to_owned(),
        other => format!("the value {}", super::redeclare::user_value(other)),
    }
}

/// A string in double quotes with escapes, cut short after [`MAX_QUOTED_CHARS`] characters.
fn quoted(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head:?}... ({} bytes in all)", text.len())
    }
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "entry") => format!("{n} entries"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::FieldValue::{Bool, Bytes, Float, Int, List, Map};

    fn s(text: &str) -> FieldValue {
        FieldValue::String(text.to_owned())
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn parse(entries: &[(&str, FieldValue)]) -> QueueArgs {
        match QueueArgs::parse(&table(entries)) {
            Ok(args) => args,
            Err(e) => panic!("refused {entries:?}: {e}"),
        }
    }

    /// Parses a table expected to be refused; checks the error names `arg` and that its reason
    /// mentions `mentions`, and returns the reason.
    fn refused(entries: &[(&str, FieldValue)], arg: &str, mentions: &str) -> String {
        let err = match QueueArgs::parse(&table(entries)) {
            Ok(args) => panic!("accepted {entries:?} as {args:?}"),
            Err(e) => e,
        };
        assert_eq!(err.arg, arg, "wrong argument named for {entries:?}: {err}");
        assert!(
            err.reason.contains(mentions),
            "reason for {entries:?} does not mention {mentions:?}: {}",
            err.reason
        );
        err.reason
    }

    const INTEGER_ARGS: [&str; 6] = [
        X_MESSAGE_TTL,
        X_EXPIRES,
        X_MAX_LENGTH,
        X_MAX_LENGTH_BYTES,
        X_DELIVERY_LIMIT,
        X_CONSUMER_TIMEOUT,
    ];

    /// Found by the fuzz seeds: integer arguments took only `Int` (i64), so
    /// `--arg x-max-priority:u8=10`, or a client sending a 32-bit int as RabbitMQ clients
    /// do, was refused. RabbitMQ takes integers of every width.
    #[test]
    fn integers_of_every_width_are_accepted() {
        use FieldValue::{I16, I32, I8, U16, U32, U64, U8};
        let args = parse(&[
            (X_MESSAGE_TTL, U32(60_000)),
            (X_EXPIRES, I32(1_800_000)),
            (X_MAX_LENGTH, U16(1000)),
            (X_MAX_LENGTH_BYTES, U64(1 << 20)),
            (X_DELIVERY_LIMIT, U8(5)),
            (X_CONSUMER_TIMEOUT, I32(30_000)),
            (X_MAX_PRIORITY, U8(10)),
            (X_RETRY_BACKOFF, List(vec![I16(100), U32(2000)])),
        ]);
        assert_eq!(args.message_ttl_ms, Some(60_000));
        assert_eq!(args.expires_ms, Some(1_800_000));
        assert_eq!(args.max_length, Some(1000));
        assert_eq!(args.max_length_bytes, Some(1 << 20));
        assert_eq!(args.delivery_limit, Some(5));
        assert_eq!(args.consumer_timeout_ms, Some(30_000));
        assert_eq!(args.max_priority, Some(10));
        assert_eq!(args.retry_backoff_ms, Some(vec![100, 2000]));
        assert_eq!(
            parse(&[(X_RETRY_BACKOFF, U16(250))]).retry_backoff_ms,
            Some(vec![250])
        );
        assert_eq!(parse(&[(X_DELIVERY_LIMIT, I8(-1))]).delivery_limit, None);
        refused(&[(X_MAX_LENGTH, I8(-3))], X_MAX_LENGTH, "negative");
        refused(
            &[(X_MAX_PRIORITY, I16(-1))],
            X_MAX_PRIORITY,
            "between 1 and",
        );
        refused(
            &[(X_MAX_PRIORITY, U16(256))],
            X_MAX_PRIORITY,
            "between 1 and",
        );
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        assert_eq!(parse(&[]), QueueArgs::default());
        let defaults = QueueArgs::default();
        assert_eq!(defaults.overflow, Overflow::DropHead);
        assert!(!defaults.dead_letters());
        assert_eq!(defaults.retry_delay_ms(1), None);
    }

    #[test]
    fn every_argument_is_accepted_with_a_valid_value() {
        let args = parse(&[
            (X_DEAD_LETTER_EXCHANGE, s("dlx")),
            (X_DEAD_LETTER_ROUTING_KEY, s("dead")),
            (X_MESSAGE_TTL, Int(60_000)),
            (X_EXPIRES, Int(1_800_000)),
            (X_MAX_LENGTH, Int(1000)),
            (X_MAX_LENGTH_BYTES, Int(1 << 20)),
            (X_OVERFLOW, s("reject-publish")),
            (X_DELIVERY_LIMIT, Int(5)),
            (X_CONSUMER_TIMEOUT, Int(900_000)),
            (X_RETRY_BACKOFF, s("1s,5s,30s")),
            (X_SINGLE_ACTIVE_CONSUMER, Bool(true)),
            (X_MAX_PRIORITY, Int(10)),
        ]);
        assert_eq!(
            args,
            QueueArgs {
                dead_letter_exchange: Some("dlx".into()),
                dead_letter_routing_key: Some("dead".into()),
                message_ttl_ms: Some(60_000),
                expires_ms: Some(1_800_000),
                max_length: Some(1000),
                max_length_bytes: Some(1 << 20),
                overflow: Overflow::RejectPublish,
                delivery_limit: Some(5),
                consumer_timeout_ms: Some(900_000),
                retry_backoff_ms: Some(vec![1000, 5000, 30_000]),
                single_active_consumer: true,
                max_priority: Some(10),
                dedup: None,
                queue_type: QueueType::Classic,
                max_age_ms: None,
                stream_chunk_bytes: None,
            }
        );
        assert!(args.dead_letters());
    }

    #[test]
    fn each_argument_alone_sets_only_its_field() {
        let cases: [(&str, FieldValue, QueueArgs); 9] = [
            (
                X_DEAD_LETTER_EXCHANGE,
                s("dlx"),
                QueueArgs {
                    dead_letter_exchange: Some("dlx".into()),
                    ..QueueArgs::default()
                },
            ),
            (
                X_MESSAGE_TTL,
                Int(0),
                QueueArgs {
                    message_ttl_ms: Some(0),
                    ..QueueArgs::default()
                },
            ),
            (
                X_EXPIRES,
                Int(1),
                QueueArgs {
                    expires_ms: Some(1),
                    ..QueueArgs::default()
                },
            ),
            (
                X_MAX_LENGTH,
                Int(0),
                QueueArgs {
                    max_length: Some(0),
                    ..QueueArgs::default()
                },
            ),
            (
                X_MAX_LENGTH_BYTES,
                Int(i64::MAX),
                QueueArgs {
                    max_length_bytes: Some(i64::MAX as u64),
                    ..QueueArgs::default()
                },
            ),
            (
                X_OVERFLOW,
                s("reject-publish-dlx"),
                QueueArgs {
                    overflow: Overflow::RejectPublishDlx,
                    ..QueueArgs::default()
                },
            ),
            (
                X_DELIVERY_LIMIT,
                Int(0),
                QueueArgs {
                    delivery_limit: Some(0),
                    ..QueueArgs::default()
                },
            ),
            (
                X_CONSUMER_TIMEOUT,
                Int(1),
                QueueArgs {
                    consumer_timeout_ms: Some(1),
                    ..QueueArgs::default()
                },
            ),
            (
                X_RETRY_BACKOFF,
                List(vec![Int(0)]),
                QueueArgs {
                    retry_backoff_ms: Some(vec![0]),
                    ..QueueArgs::default()
                },
            ),
        ];
        for (arg, value, expected) in cases {
            assert_eq!(parse(&[(arg, value)]), expected, "{arg}");
        }
    }

    #[test]
    fn the_default_exchange_is_a_valid_dead_letter_exchange() {
        let args = parse(&[(X_DEAD_LETTER_EXCHANGE, s(""))]);
        assert_eq!(args.dead_letter_exchange.as_deref(), Some(""));
        assert!(args.dead_letters());
        let args = parse(&[
            (X_DEAD_LETTER_EXCHANGE, s("")),
            (X_DEAD_LETTER_ROUTING_KEY, s("parking-lot")),
        ]);
        assert_eq!(args.dead_letter_routing_key.as_deref(), Some("parking-lot"));
    }

    #[test]
    fn every_overflow_value_is_accepted_and_named_back() {
        for overflow in [
            Overflow::DropHead,
            Overflow::RejectPublish,
            Overflow::RejectPublishDlx,
        ] {
            assert_eq!(
                parse(&[(X_OVERFLOW, s(overflow.as_str()))]).overflow,
                overflow
            );
        }
        assert_eq!(Overflow::DropHead.as_str(), "drop-head");
        assert_eq!(Overflow::RejectPublish.as_str(), "reject-publish");
        assert_eq!(Overflow::RejectPublishDlx.as_str(), "reject-publish-dlx");
    }

    #[test]
    fn non_x_arguments_are_ignored() {
        let args = parse(&[
            ("alternate-exchange", s("ae")),
            ("message-ttl", s("not even a number")),
        ]);
        assert_eq!(args, QueueArgs::default());
    }

    #[test]
    fn unimplemented_x_arguments_are_refused_by_name() {
        for (arg, value) in [
            ("x-queue-master-locator", s("min-masters")),
            ("x-queue-mode", s("lazy")),
            ("x-whatever", Map(FieldTable::new())),
        ] {
            let reason = refused(&[(arg, value)], arg, "does not implement");
            assert_eq!(reason, NOT_IMPLEMENTED_REASON);
        }
        // Refused even next to valid ones, and the first in key order is named.
        refused(
            &[
                (X_MESSAGE_TTL, Int(5)),
                ("x-queue-mode", s("lazy")),
                ("x-queue-master-locator", s("min-masters")),
            ],
            "x-queue-master-locator",
            "does not implement",
        );
        let err = QueueArgs::parse(&table(&[("x-queue-mode", s("lazy"))])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid arg 'x-queue-mode': Warren does not implement this argument yet; \
             declare without it"
        );
    }

    #[test]
    fn max_priority_is_an_integer_from_1_to_255() {
        for max in [1, 10, 255] {
            assert_eq!(
                parse(&[(X_MAX_PRIORITY, Int(max))]).max_priority,
                Some(u8::try_from(max).expect("in range"))
            );
        }
        assert_eq!(parse(&[(X_MAX_PRIORITY, Float(5.0))]).max_priority, Some(5));
        for bad in [0, 256, -1, i64::MIN] {
            assert_eq!(
                refused(&[(X_MAX_PRIORITY, Int(bad))], X_MAX_PRIORITY, "between"),
                format!("must be between 1 and 255, got {bad}")
            );
        }
        assert_eq!(
            refused(&[(X_MAX_PRIORITY, s("10"))], X_MAX_PRIORITY, "10"),
            "expected an integer number of priority levels, got the string \"10\""
        );
        refused(&[(X_MAX_PRIORITY, Float(1.5))], X_MAX_PRIORITY, "1.5");
        refused(&[(X_MAX_PRIORITY, Float(256.0))], X_MAX_PRIORITY, "256.0");
        refused(&[(X_MAX_PRIORITY, Bool(true))], X_MAX_PRIORITY, "boolean");
        let err = QueueArgs::parse(&table(&[(X_MAX_PRIORITY, Int(0))])).expect_err("refused");
        assert_eq!(
            err.refusal("queue 'jobs'").to_string(),
            "invalid arg 'x-max-priority' for queue 'jobs': must be between 1 and 255, got 0"
        );
    }

    #[test]
    fn single_active_consumer_is_a_boolean() {
        assert!(!parse(&[]).single_active_consumer);
        assert!(parse(&[(X_SINGLE_ACTIVE_CONSUMER, Bool(true))]).single_active_consumer);
        assert!(!parse(&[(X_SINGLE_ACTIVE_CONSUMER, Bool(false))]).single_active_consumer);
        let reason = refused(
            &[(X_SINGLE_ACTIVE_CONSUMER, s("true"))],
            X_SINGLE_ACTIVE_CONSUMER,
            "boolean",
        );
        assert_eq!(reason, "expected a boolean, got the string \"true\"");
        refused(
            &[(X_SINGLE_ACTIVE_CONSUMER, Int(1))],
            X_SINGLE_ACTIVE_CONSUMER,
            "an integer 1",
        );
    }

    #[test]
    fn classic_and_stream_are_the_queue_types() {
        assert_eq!(parse(&[(X_QUEUE_TYPE, s("classic"))]), QueueArgs::default());
        assert_eq!(
            parse(&[(X_QUEUE_TYPE, s("stream"))]).queue_type,
            QueueType::Stream
        );
        assert_eq!(
            refused(&[(X_QUEUE_TYPE, s("quorum"))], X_QUEUE_TYPE, "quorum"),
            "quorum queues are not supported yet; Warren has \"classic\" queues and \"stream\"s"
        );
        assert_eq!(
            refused(&[(X_QUEUE_TYPE, s("Classic"))], X_QUEUE_TYPE, "Classic"),
            "expected \"classic\" or \"stream\", got the string \"Classic\""
        );
        refused(&[(X_QUEUE_TYPE, Int(1))], X_QUEUE_TYPE, "an integer 1");
    }

    #[test]
    fn streams_take_retention_arguments_and_refuse_the_classic_ones() {
        let args = parse(&[
            (X_QUEUE_TYPE, s("stream")),
            (X_MAX_LENGTH_BYTES, Int(1 << 30)),
            (X_MAX_AGE, s("7D")),
            (X_STREAM_MAX_SEGMENT_SIZE_BYTES, Int(1 << 20)),
        ]);
        assert_eq!(args.max_length_bytes, Some(1 << 30));
        assert_eq!(args.max_age_ms, Some(7 * 86_400_000));
        assert_eq!(args.stream_chunk_bytes, Some(1 << 20));
        for (arg, _) in NOT_FOR_STREAMS {
            let err = QueueArgs::parse(&table(&[(X_QUEUE_TYPE, s("stream")), (arg, Int(1))]))
                .expect_err(arg);
            assert_eq!(err.arg, arg);
            assert!(err.reason.starts_with("not allowed on a stream"), "{err}");
        }
        let err = QueueArgs::parse(&table(&[(X_MAX_AGE, s("1h"))])).expect_err("classic");
        assert_eq!(err.arg, X_MAX_AGE);
        assert_eq!(parse_max_age_ms("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_max_age_ms("1Y"), Ok(365 * 86_400_000));
        assert_eq!(parse_max_age_ms("30s"), Ok(30_000));
        for bad in ["7", "7d", "0D", "D", "-1h", "1.5h", "99999999999999999Y"] {
            assert!(parse_max_age_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_tables_parse_what_is_known_and_list_the_rest() {
        let stored = table(&[
            (X_MESSAGE_TTL, Int(5000)),
            ("x-queue-mode", s("lazy")),
            (X_QUEUE_TYPE, s("quorum")),
            ("alternate-exchange", s("ae")),
        ]);
        let args = QueueArgs::parse_known(&stored).expect("known arguments parse");
        assert_eq!(args.message_ttl_ms, Some(5000));
        assert_eq!(
            unsupported_arguments(&stored),
            vec!["x-queue-mode", X_QUEUE_TYPE]
        );
        assert!(unsupported_arguments(&table(&[(X_QUEUE_TYPE, s("classic"))])).is_empty());
    }

    #[test]
    fn integral_floats_are_accepted_as_integers() {
        let args = parse(&[
            (X_MESSAGE_TTL, Float(1000.0)),
            (X_MAX_LENGTH, Float(0.0)),
            (X_DELIVERY_LIMIT, Float(3.0)),
            (X_EXPIRES, Float(1e9)),
        ]);
        assert_eq!(args.message_ttl_ms, Some(1000));
        assert_eq!(args.max_length, Some(0));
        assert_eq!(args.delivery_limit, Some(3));
        assert_eq!(args.expires_ms, Some(1_000_000_000));
        // The largest float below 2^64 still fits.
        let big = 18_446_744_073_709_549_568.0;
        assert_eq!(
            parse(&[(X_MAX_LENGTH_BYTES, Float(big))]).max_length_bytes,
            Some(18_446_744_073_709_549_568)
        );
    }

    #[test]
    fn an_integer_sent_as_a_string_is_refused() {
        for arg in INTEGER_ARGS {
            let reason = refused(&[(arg, s("1000"))], arg, "the string \"1000\"");
            assert!(
                reason.starts_with("expected an integer number of"),
                "{reason}"
            );
        }
        assert_eq!(
            refused(&[(X_MESSAGE_TTL, s("1000"))], X_MESSAGE_TTL, "1000"),
            "expected an integer number of milliseconds, got the string \"1000\""
        );
        assert_eq!(
            refused(&[(X_MAX_LENGTH, s("10"))], X_MAX_LENGTH, "10"),
            "expected an integer number of messages, got the string \"10\""
        );
    }

    #[test]
    fn negative_integers_are_refused() {
        for arg in INTEGER_ARGS {
            let reason = refused(&[(arg, Int(-5))], arg, "-5");
            assert_eq!(reason, "must not be negative, got -5");
        }
        refused(
            &[(X_MESSAGE_TTL, Int(i64::MIN))],
            X_MESSAGE_TTL,
            &i64::MIN.to_string(),
        );
    }

    #[test]
    fn floats_that_are_not_whole_non_negative_numbers_are_refused() {
        for arg in INTEGER_ARGS {
            refused(&[(arg, Float(1.5))], arg, "1.5");
            refused(&[(arg, Float(-5.0))], arg, "-5.0");
            refused(&[(arg, Float(f64::NAN))], arg, "NaN");
            refused(&[(arg, Float(f64::INFINITY))], arg, "inf");
            refused(&[(arg, Float(1e30))], arg, "1e30");
        }
        assert_eq!(
            refused(&[(X_MESSAGE_TTL, Float(1.5))], X_MESSAGE_TTL, "1.5"),
            "expected an integer number of milliseconds, got a float 1.5"
        );
        assert_eq!(
            refused(&[(X_MESSAGE_TTL, Float(-5.0))], X_MESSAGE_TTL, "-5"),
            "must not be negative, got a float -5.0"
        );
        refused(
            &[(X_MESSAGE_TTL, Float(TWO_POW_64))],
            X_MESSAGE_TTL,
            "at most",
        );
    }

    #[test]
    fn other_types_are_refused_for_integer_arguments() {
        for arg in INTEGER_ARGS {
            refused(&[(arg, Bool(true))], arg, "a boolean true");
            refused(&[(arg, List(vec![Int(1)]))], arg, "a list of 1 value");
        }
    }

    #[test]
    fn zero_is_refused_where_it_is_meaningless() {
        for arg in [X_EXPIRES, X_CONSUMER_TIMEOUT] {
            let reason = refused(&[(arg, Int(0))], arg, "0");
            assert_eq!(reason, "must be at least 1 ms, got 0");
            refused(&[(arg, Float(0.0))], arg, "0");
        }
    }

    #[test]
    fn a_delivery_limit_of_minus_one_is_no_limit() {
        assert_eq!(parse(&[(X_DELIVERY_LIMIT, Int(-1))]).delivery_limit, None);
        assert_eq!(
            parse(&[(X_DELIVERY_LIMIT, Float(-1.0))]).delivery_limit,
            None
        );
        let reason = refused(&[(X_DELIVERY_LIMIT, Int(-2))], X_DELIVERY_LIMIT, "-2");
        assert_eq!(reason, "must not be negative, got -2");
    }

    #[test]
    fn a_message_ttl_beyond_ten_years_is_refused() {
        let max = i64::try_from(MAX_TTL_MS).unwrap();
        assert_eq!(
            parse(&[(X_MESSAGE_TTL, Int(max))]).message_ttl_ms,
            Some(MAX_TTL_MS)
        );
        let reason = refused(
            &[(X_MESSAGE_TTL, Int(max + 1))],
            X_MESSAGE_TTL,
            "315360000001",
        );
        assert_eq!(
            reason,
            "must be at most 315360000000 ms (ten years), got 315360000001"
        );
    }

    #[test]
    fn a_delivery_limit_beyond_u32_is_refused() {
        assert_eq!(
            parse(&[(X_DELIVERY_LIMIT, Int(u32::MAX.into()))]).delivery_limit,
            Some(u32::MAX)
        );
        let reason = refused(
            &[(X_DELIVERY_LIMIT, Int(i64::from(u32::MAX) + 1))],
            X_DELIVERY_LIMIT,
            "4294967296",
        );
        assert_eq!(reason, "must be at most 4294967295, got 4294967296");
    }

    #[test]
    fn an_unknown_overflow_is_refused() {
        let reason = refused(&[(X_OVERFLOW, s("drop-tail"))], X_OVERFLOW, "\"drop-tail\"");
        assert_eq!(
            reason,
            "expected \"drop-head\", \"reject-publish\" or \"reject-publish-dlx\", got \"drop-tail\""
        );
        // Matching is exact, as in RabbitMQ.
        refused(&[(X_OVERFLOW, s("Drop-Head"))], X_OVERFLOW, "\"Drop-Head\"");
        let reason = refused(&[(X_OVERFLOW, Int(5))], X_OVERFLOW, "5");
        assert_eq!(reason, "expected a string, got an integer 5");
    }

    #[test]
    fn string_arguments_of_another_type_are_refused() {
        for arg in [X_DEAD_LETTER_EXCHANGE, X_DEAD_LETTER_ROUTING_KEY] {
            // The routing key's type is checked before its need for an exchange.
            let reason = refused(&[(arg, Int(5))], arg, "5");
            assert_eq!(reason, "expected a string, got an integer 5");
        }
        let dlx = X_DEAD_LETTER_EXCHANGE;
        refused(&[(dlx, Float(2.5))], dlx, "a float 2.5");
        refused(&[(dlx, Bool(false))], dlx, "a boolean false");
        refused(
            &[(dlx, Bytes(b"dlx".to_vec().into()))],
            dlx,
            "binary data of 3 bytes",
        );
        refused(&[(dlx, List(vec![]))], dlx, "a list of 0 values");
        refused(
            &[(dlx, Map(table(&[("a", Int(1)), ("b", Int(2))])))],
            dlx,
            "a table of 2 entries",
        );
    }

    #[test]
    fn a_dead_letter_routing_key_needs_a_dead_letter_exchange() {
        let reason = refused(
            &[(X_DEAD_LETTER_ROUTING_KEY, s("rk"))],
            X_DEAD_LETTER_ROUTING_KEY,
            "\"rk\"",
        );
        assert!(reason.contains(X_DEAD_LETTER_EXCHANGE), "{reason}");
    }

    #[test]
    fn retry_backoff_accepts_strings_and_lists() {
        let backoff = |value: FieldValue| parse(&[(X_RETRY_BACKOFF, value)]).retry_backoff_ms;
        assert_eq!(backoff(s("250ms")), Some(vec![250]));
        assert_eq!(
            backoff(s(" 1s , 5s,30s ,2m,1h, 1500 ,0")),
            Some(vec![1000, 5000, 30_000, 120_000, 3_600_000, 1500, 0])
        );
        assert_eq!(
            backoff(List(vec![
                Int(100),
                s("5s"),
                Float(2000.0),
                Int(0),
                s(" 1m ")
            ])),
            Some(vec![100, 5000, 2000, 0, 60_000])
        );
        let most = vec![Int(1); MAX_RETRY_BACKOFF_ENTRIES];
        assert_eq!(
            backoff(List(most)),
            Some(vec![1; MAX_RETRY_BACKOFF_ENTRIES])
        );
        let most = vec!["1ms"; MAX_RETRY_BACKOFF_ENTRIES].join(",");
        assert_eq!(backoff(s(&most)), Some(vec![1; MAX_RETRY_BACKOFF_ENTRIES]));
    }

    #[test]
    fn bad_retry_backoffs_are_refused() {
        let arg = X_RETRY_BACKOFF;
        assert_eq!(
            refused(&[(arg, s(""))], arg, "\"\""),
            "must list at least one delay, got the string \"\""
        );
        refused(&[(arg, s("  "))], arg, "\"  \"");
        assert_eq!(
            refused(&[(arg, List(vec![]))], arg, "a list of 0 values"),
            "must list at least one delay, got a list of 0 values"
        );
        let reason = refused(&[(arg, s("1s,5x,30s"))], arg, "\"5x\"");
        assert!(reason.starts_with("entry 2: "), "{reason}");
        refused(&[(arg, s("1s,,5s"))], arg, "entry 2: empty duration");
        refused(&[(arg, s("1s,5s,"))], arg, "entry 3: empty duration");
        refused(&[(arg, s("-1s"))], arg, "\"-1s\"");
        assert_eq!(
            refused(&[(arg, List(vec![Int(5), Int(-5)]))], arg, "-5"),
            "entry 2: must not be negative, got -5"
        );
        refused(&[(arg, List(vec![s("5s"), s("soon")]))], arg, "\"soon\"");
        refused(&[(arg, List(vec![Bool(true)]))], arg, "entry 1: expected");
        refused(&[(arg, List(vec![Float(0.5)]))], arg, "0.5");
        refused(
            &[(arg, List(vec![List(vec![])]))],
            arg,
            "a list of 0 values",
        );
        // A bare integer is not a schedule: it takes a string or a list.
        // A lone number is a one-entry schedule.
        assert_eq!(
            parse(&[(arg, Int(1000))]).retry_backoff_ms,
            Some(vec![1000])
        );
        refused(&[(arg, Int(-1))], arg, "-1");
        refused(&[(arg, Bool(true))], arg, "a boolean true");

        let too_many = vec![Int(1); MAX_RETRY_BACKOFF_ENTRIES + 1];
        assert_eq!(
            refused(&[(arg, List(too_many))], arg, "101"),
            "at most 100 delays are allowed, got 101"
        );
        let too_many = vec!["1s"; MAX_RETRY_BACKOFF_ENTRIES + 1].join(",");
        refused(&[(arg, s(&too_many))], arg, "got 101");
    }

    #[test]
    fn long_values_are_cut_short_in_messages() {
        let long = "a".repeat(10_000);
        let reason = refused(&[(X_OVERFLOW, s(&long))], X_OVERFLOW, "aaaa");
        assert!(reason.len() < 300, "{} bytes: {reason}", reason.len());
        assert!(reason.contains("10000 bytes in all"), "{reason}");
        // Cutting counts characters, never splitting one.
        let wide = "é".repeat(100);
        refused(&[(X_OVERFLOW, s(&wide))], X_OVERFLOW, "200 bytes in all");
    }

    #[test]
    fn the_error_displays_argument_and_reason() {
        let err = QueueArgs::parse(&table(&[(X_EXPIRES, Int(0))])).expect_err("0 is refused");
        assert_eq!(
            err.to_string(),
            "invalid arg 'x-expires': must be at least 1 ms, got 0"
        );
        // What a client sees: RabbitMQ's 406 and wording, naming the queue.
        let refusal = err.refusal("queue 'q'");
        assert_eq!(
            refusal.code(),
            warren_protocol::ErrorCode::PreconditionFailed
        );
        assert_eq!(
            refusal.to_string(),
            "invalid arg 'x-expires' for queue 'q': must be at least 1 ms, got 0"
        );
    }

    #[test]
    fn durations_parse_with_each_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1s"), Ok(1000));
        assert_eq!(parse_duration_ms("5s"), Ok(5000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("007s"), Ok(7000));
        assert_eq!(parse_duration_ms(" 5s\t"), Ok(5000));
        assert_eq!(
            parse_duration_ms("5124095576030h"),
            Ok(5_124_095_576_030 * 3_600_000)
        );
        assert_eq!(parse_duration_ms("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_durations_are_refused_naming_the_text() {
        let refused = |text: &str, mentions: &str| match parse_duration_ms(text) {
            Ok(ms) => panic!("{text:?} parsed as {ms} ms"),
            Err(e) => assert!(e.contains(mentions), "error for {text:?}: {e}"),
        };
        refused("", "empty duration");
        refused("   ", "empty duration");
        refused("5d", "unknown unit \"d\"");
        refused("5S", "unknown unit \"S\"");
        refused("5sec", "unknown unit \"sec\"");
        refused("5 s", "\"5 s\"");
        refused("1.5s", "\"1.5s\"");
        refused("-5s", "\"-5s\"");
        refused("+5s", "\"+5s\"");
        refused("ms", "\"ms\"");
        refused("s5", "\"s5\"");
        refused("５s", "\"５s\"");
        refused("99999999999999999999h", "too large");
        refused("99999999999999999999", "\"99999999999999999999\"");
        refused("18446744073709551616", "too large");
        refused("5124095576031h", "too large");
        refused("307445734561826m", "\"307445734561826m\"");
    }

    #[test]
    fn retry_delay_indexes_by_failure_count_and_sticks_at_the_last() {
        let args = parse(&[(X_RETRY_BACKOFF, s("1s,5s,30s"))]);
        assert_eq!(args.retry_delay_ms(1), Some(1000));
        assert_eq!(args.retry_delay_ms(2), Some(5000));
        assert_eq!(args.retry_delay_ms(3), Some(30_000));
        assert_eq!(args.retry_delay_ms(4), Some(30_000));
        assert_eq!(args.retry_delay_ms(u32::MAX), Some(30_000));
        // 0 failures is out of contract; it reads as the first.
        assert_eq!(args.retry_delay_ms(0), Some(1000));

        let single = parse(&[(X_RETRY_BACKOFF, List(vec![Int(0)]))]);
        assert_eq!(single.retry_delay_ms(1), Some(0));
        assert_eq!(single.retry_delay_ms(7), Some(0));

        assert_eq!(QueueArgs::default().retry_delay_ms(1), None);
        let empty = QueueArgs {
            retry_backoff_ms: Some(vec![]),
            ..QueueArgs::default()
        };
        assert_eq!(empty.retry_delay_ms(1), None);
    }
}
