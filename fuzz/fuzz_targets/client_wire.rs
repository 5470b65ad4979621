//! See `ws_realtime::fuzzing::client_wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_realtime::fuzzing::client_wire(data));
