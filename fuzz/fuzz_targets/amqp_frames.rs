//! Arbitrary bytes as a client's AMQP 0-9-1 stream through the AMQP listener's frame
//! decoder, method and content-header parsing, with the nesting checks the listener makes
//! first: no panic, no stack overflow, stable re-encoding (`warren::fuzzing::amqp_frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren::fuzzing::amqp_frames(data));
