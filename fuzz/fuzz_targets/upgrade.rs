//! See `ws_realtime::fuzzing::upgrade`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_realtime::fuzzing::upgrade(data));
