//! Arbitrary bytes into the frame codec: decoding must never panic, and every frame that
//! decodes must encode to bytes that decode and encode to the same bytes again (compared as
//! bytes, so NaN header floats do not count as differences).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use warren_protocol::FrameCodec;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    // Each decoded frame removes at least its 13-byte header, so this loop is bounded.
    while let Ok(Some(envelope)) = codec.decode(&mut buf) {
        let encoded = envelope.to_bytes();
        let mut again = BytesMut::from(&encoded[..]);
        let decoded = codec
            .decode(&mut again)
            .expect("a frame we encoded decodes")
            .expect("a whole frame");
        assert!(again.is_empty(), "re-decoding left bytes behind");
        assert_eq!(decoded.to_bytes(), encoded, "encoding is not stable");
    }
});
