//! Fuzzes camstream's RTSP request guard (src/guard.rs) with raw request heads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::output::rtsp::guard::fuzz_request(data);
});
