//! Arbitrary bytes into the frame codec, plain and with a header cap: no panic, every decoded
//! frame re-encodes stably, and the capped codec agrees with the plain one
//! (`warren_protocol::fuzzing::frame_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_protocol::fuzzing::frame_decode(data));
