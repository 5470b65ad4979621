//! See `ws_realtime::fuzzing::source_payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_realtime::fuzzing::source_payload(data));
