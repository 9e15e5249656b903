//! Arbitrary bytes through the field-table reader and `Properties::decode`: no panic, stable
//! re-encoding, bounded nesting (`warren_protocol::fuzzing::field_table`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_protocol::fuzzing::field_table(data));
