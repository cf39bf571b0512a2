//! Fuzzes the time parsers behind recording queries (`from`, `to`) and file names (src/utc.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::utc::fuzz_time(data);
});
