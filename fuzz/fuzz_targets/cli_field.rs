//! Arbitrary text through the CLI's typed `KEY[:TYPE]=VALUE` parser and the duration parser:
//! no panic (`warren::fuzzing::cli_field`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren::fuzzing::cli_field(data));
