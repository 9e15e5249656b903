//! `stream.info` and `stream.consumers`: what a stream holds, how it is trimmed, and where
//! its named consumers stand (docs/streams.md).

use crate::admin_types::{StreamConsumerInfo, StreamInfo, StreamProducerInfo};
use crate::broker::vhost::VHost;
use crate::error::BrokerError;

/// The stream `name` of `vh`, summarised.
///
/// # Errors
/// No such queue, or the queue is not a stream.
pub(super) fn info(vh: &VHost, name: &str) -> Result<StreamInfo, BrokerError> {
    let q = vh
        .queue(name)
        .ok_or_else(|| BrokerError::not_found("queue", name))?;
    let Some(s) = &q.stream else {
        return Err(BrokerError::PreconditionFailed(format!(
            "queue '{name}' is a classic queue, not a stream"
        )));
    };
    let sum = s.summary();
    let (max_length_bytes, max_age_ms, chunk_bytes) = s.retention();
    let messages = sum.next_offset - sum.first_offset;
    let held = |v: u64| (messages > 0).then_some(v);
    Ok(StreamInfo {
        name: name.to_owned(),
        messages,
        first_offset: held(sum.first_offset),
        last_offset: held(sum.next_offset.saturating_sub(1)),
        next_offset: sum.next_offset,
        first_timestamp_ms: held(sum.first_timestamp),
        last_timestamp_ms: held(sum.last_timestamp),
        bytes: sum.bytes,
        chunks: sum.chunks,
        max_length_bytes,
        max_age_ms,
        chunk_bytes,
        consumers: sum.consumers,
        named_consumers: sum
            .named
            .into_iter()
            .map(|(name, offset, attached)| StreamConsumerInfo {
                name,
                offset,
                lag: sum.next_offset.saturating_sub(offset),
                attached,
            })
            .collect(),
        producers: sum
            .producers
            .into_iter()
            .map(|(name, sequence)| StreamProducerInfo { name, sequence })
            .collect(),
    })
}
