//! Fuzzes ICE-TCP framing, the demultiplexer and STUN parsing (src/output/webrtc/tcp.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::output::webrtc::tcp::fuzz_frames(data);
});
