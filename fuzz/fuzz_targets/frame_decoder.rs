//! Fuzz target: the order-entry frame decoder, fed arbitrary bytes, must never panic; any
//! frame it accepts must re-encode to exactly the bytes it consumed; and every wire record
//! decoder must never panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmatch_gateway::{decode_frame, encode_frame, Decoded};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Decoded::Frame(frame, length)) = decode_frame(rest, 4096) {
        let mut encoded = Vec::new();
        encode_frame(&frame, &mut encoded);
        assert_eq!(
            &encoded[..],
            &rest[..length],
            "re-encoding changed the frame"
        );
        rest = &rest[length..];
    }
    let _ = ringmatch_proto::Command::decode(data);
    let _ = ringmatch_proto::Event::decode(data);
});
