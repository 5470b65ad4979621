//! See `ws_realtime::fuzzing::extension_offer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_realtime::fuzzing::extension_offer(data));
