//! Fuzzes what a WHEP offer reaches before a session exists (src/output/webrtc/whep.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::output::webrtc::whep::fuzz_offer(data);
});
