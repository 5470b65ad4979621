//! See `ws_realtime::fuzzing::core_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_realtime::fuzzing::core_ops(data));
