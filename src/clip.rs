//! Bounded rendering of text a client chose (names, argument values, error texts built from
//! them), for log lines and error replies.
//!
//! A client can send a 64 KiB routing key or an 8 MB admin argument; echoing it whole into
//! every log line and reply lets one client write gigabytes of log. Names within the broker's
//! own limit ([`crate::broker::MAX_NAME_BYTES`]) are shown whole, so every name that can exist
//! reads exactly; longer text keeps its start and says how long it was.

use std::borrow::Cow;

use crate::broker::MAX_NAME_BYTES;

/// How much of an over-long name a message keeps.
const NAME_PREFIX_CHARS: usize = 64;

/// The most bytes of text one error reply or one log field carries.
pub const MAX_TEXT_BYTES: usize = 1024;

/// `name` whole when it is no longer than [`MAX_NAME_BYTES`]; otherwise its first characters
/// and its length, e.g. `aaaa… (70,000 bytes)`.
pub fn name(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_NAME_BYTES {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!(
            "{}… ({} bytes)",
            prefix(name, NAME_PREFIX_CHARS),
            crate::error::thousands(name.len())
        ))
    }
}

/// `text` whole when it is at most [`MAX_TEXT_BYTES`] long; otherwise cut at a character
/// boundary below that, with a note of how long it was.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TEXT_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_TEXT_BYTES - 32;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes in all)",
        &text[..end],
        crate::error::thousands(text.len())
    ))
}

fn prefix(s: &str, chars: usize) -> &str {
    match s.char_indices().nth(chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_can_exist_are_shown_whole() {
        let longest = "q".repeat(MAX_NAME_BYTES);
        assert_eq!(name(&longest), longest);
        assert_eq!(name(""), "");
    }

    #[test]
    fn longer_names_keep_their_start_and_length() {
        let long = "é".repeat(40_000);
        let shown = name(&long);
        assert_eq!(shown, format!("{}… (80,000 bytes)", "é".repeat(64)));
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = format!("x{}", "é".repeat(5_000));
        let shown = text(&long);
        assert!(shown.len() <= MAX_TEXT_BYTES, "{}", shown.len());
        assert!(shown.ends_with("… (10,001 bytes in all)"), "{shown}");
        assert_eq!(text("short"), "short");
    }
}
