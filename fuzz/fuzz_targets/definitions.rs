//! Arbitrary text as a definitions document through the parse step of `definitions.import`:
//! no panic (`warren::fuzzing::definitions`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren::fuzzing::definitions(data));
