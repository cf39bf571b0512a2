//! Fuzzes the recording export's `Range` header parser (src/http/recordings.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::fuzz::fuzz_range(data);
});
