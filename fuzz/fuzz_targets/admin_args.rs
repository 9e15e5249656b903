//! Arbitrary field tables (decoded as a client's frame brings them) into the admin, queue,
//! exchange and binding argument parsers: no panic (`warren::fuzzing::admin_args`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren::fuzzing::admin_args(data));
