//! Fuzzes the ONVIF SOAP reader, reached before authentication (src/output/onvif/soap.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream::output::onvif::soap::fuzz_parse(data);
});
