//! Arbitrary bytes as what a server reads first: the client preface, then frames through the
//! server's codec configuration (`warren_protocol::fuzzing::handshake`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_protocol::fuzzing::handshake(data));
