//! A capture file (classic pcap or pcapng): never a panic, and every frame read is no longer
//! on the wire than it says.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(capture) = edge::capture::parse(data, "fuzz.pcap") {
        for frame in &capture.frames {
            assert!(frame.data.len() <= frame.original_len);
        }
    }
});
