//! Binding patterns and routing keys through the topic trie, compared with a word-by-word
//! reference matcher before and after removing bindings (`warren::fuzzing::topic_pattern`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren::fuzzing::topic_pattern(data));
