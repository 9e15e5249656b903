//! The checks behind the cargo-fuzz targets in `fuzz/` (`frame_decode`, `field_table`,
//! `handshake`), here so that the fuzzers and the corpus replay test run the very same code.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature, which only the fuzz crate
//! turns on. Each check takes arbitrary bytes and panics when an invariant breaks; decode
//! errors are fine, they are what hostile input should get.
#![allow(clippy::panic, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::field_table::{put_table, read_table, skip_table, FieldTable, FieldValue};
use crate::handshake::{client_preface, parse_client_preface, PREFACE_BYTES};
use crate::headers::Headers;
use crate::properties::Properties;
use crate::read::Reader;
use crate::{Envelope, Frame, FrameCodec, MAX_FIELD_DEPTH};

/// Frame size the fuzz checks decode with: large enough for any input a fuzzer makes, small
/// enough that a hostile length prefix is refused as it would be by a server.
const FUZZ_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// A header cap small enough that seeds with headers cross it.
const FUZZ_MAX_HEADER_BYTES: u32 = 64;

/// Arbitrary bytes into the frame codec, twice: once plain, once with a header cap (as the
/// server reads). Decoding never panics; every frame that decodes re-encodes to bytes that
/// decode and encode to the same bytes again (compared as bytes, so NaN header floats do not
/// count as differences); and the capped codec agrees with the plain one on every frame whose
/// headers fit its cap.
pub fn frame_decode(data: &[u8]) {
    let mut plain = FrameCodec::new(FUZZ_MAX_FRAME_BYTES);
    let mut capped =
        FrameCodec::new(FUZZ_MAX_FRAME_BYTES).with_max_header_bytes(FUZZ_MAX_HEADER_BYTES);
    let mut plain_buf = BytesMut::from(data);
    let mut capped_buf = BytesMut::from(data);
    // Each decoded frame removes at least its 13-byte header, so this loop is bounded.
    loop {
        let from_plain = plain.decode(&mut plain_buf);
        let from_capped = capped.decode(&mut capped_buf);
        match (from_plain, from_capped) {
            (Ok(Some(full)), Ok(Some(cut))) => {
                assert_stable(&full);
                assert_stable(&cut);
                match capped.last_oversized_header() {
                    None => assert_eq!(
                        full.to_bytes(),
                        cut.to_bytes(),
                        "the capped codec changed a frame within its cap"
                    ),
                    Some(size) => {
                        assert!(size > FUZZ_MAX_HEADER_BYTES as usize, "cap {size}");
                        assert_headers_dropped(&full, &cut);
                    }
                }
                assert_eq!(plain_buf, capped_buf, "the codecs framed differently");
            }
            (Ok(None), Ok(None)) => break,
            // Skipped headers are not checked for UTF-8, so only the capped codec may take
            // what the plain one refuses.
            (Err(_), _) => break,
            (plain, capped) => panic!("plain {plain:?} but capped {capped:?}"),
        }
    }
}

/// A decoded frame encodes to bytes that decode to a frame encoding to the same bytes.
fn assert_stable(envelope: &Envelope) {
    let encoded = envelope.to_bytes();
    let mut codec = FrameCodec::new(u32::MAX);
    let mut again = BytesMut::from(&encoded[..]);
    let decoded = codec
        .decode(&mut again)
        .expect("a frame we encoded decodes")
        .expect("a whole frame");
    assert!(again.is_empty(), "re-decoding left bytes behind");
    assert_eq!(decoded.to_bytes(), encoded, "encoding is not stable");
}

/// A publish over the header cap keeps everything but its headers.
fn assert_headers_dropped(full: &Envelope, cut: &Envelope) {
    let (Frame::Publish(full_p), Frame::Publish(cut_p)) = (&full.frame, &cut.frame) else {
        panic!("only a publish can be over the header cap: {:?}", cut.frame);
    };
    assert!(
        cut_p.properties.headers.is_empty(),
        "oversized headers were built"
    );
    let mut expected = full_p.as_ref().clone();
    expected.properties.headers = Headers::new();
    assert_eq!(
        Envelope::new(full.request_id, Frame::Publish(Box::new(expected))).to_bytes(),
        cut.to_bytes(),
        "the capped publish differs in more than its headers"
    );
}

/// Arbitrary bytes as a field table and as message properties. No panic; a table that
/// decodes re-encodes to bytes that decode and encode to the same bytes again; nesting never
/// exceeds [`MAX_FIELD_DEPTH`]; `skip_table` steps over exactly what `read_table` reads;
/// [`Headers::decode`] takes and refuses exactly what `read_table` does and holds its table;
/// properties decode the same capped and uncapped when they fit the cap, and re-encode
/// stably.
pub fn field_table(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let mut read = Reader::new(bytes.clone());
    if let Ok(table) = read_table(&mut read) {
        assert!(
            table_depth(&table) <= MAX_FIELD_DEPTH + 1,
            "nesting deeper than the limit"
        );
        let mut skip = Reader::new(bytes.clone());
        skip_table(&mut skip).expect("skip_table refused a table read_table took");
        assert_eq!(skip.offset(), read.offset(), "skip and read disagree");

        let mut once = BytesMut::new();
        put_table(&mut once, &table);
        let mut r = Reader::new(once.clone().freeze());
        let again = read_table(&mut r).expect("a table we encoded decodes");
        assert_eq!(r.remaining(), 0, "re-decoding left bytes behind");
        let mut twice = BytesMut::new();
        put_table(&mut twice, &again);
        assert_eq!(once, twice, "table encoding is not stable");
    }

    // Headers kept encoded take exactly what read_table takes (refusing the rest with the
    // same error), consume as much, and hold the table read_table builds, byte for byte.
    let mut hr = Reader::new(bytes.clone());
    let mut tr = Reader::new(bytes.clone());
    match (Headers::decode(&mut hr), read_table(&mut tr)) {
        (Ok(headers), Ok(table)) => {
            assert_eq!(
                hr.offset(),
                tr.offset(),
                "headers and table consumed differently"
            );
            assert_eq!(
                headers,
                Headers::from(&table),
                "headers differ from the table"
            );
            for (key, value) in &table {
                let mut want = BytesMut::new();
                put_table(&mut want, &[(key.clone(), value.clone())].into());
                let got = headers.get(key).expect("a key of the table is found");
                let mut have = BytesMut::new();
                put_table(&mut have, &[(key.clone(), got)].into());
                assert_eq!(want, have, "a looked-up value differs");
            }
        }
        (Err(h), Err(t)) => assert_eq!(h, t, "headers and table refused differently"),
        (h, t) => panic!("headers {h:?} but table {t:?}"),
    }

    let mut r = Reader::new(bytes.clone());
    if let Ok(props) = Properties::decode(&mut r) {
        let used = r.offset();
        let mut once = BytesMut::new();
        props.encode(&mut once);
        let again = Properties::decode(&mut Reader::new(once.clone().freeze()))
            .expect("properties we encoded decode");
        let mut twice = BytesMut::new();
        again.encode(&mut twice);
        assert_eq!(once, twice, "properties encoding is not stable");

        // Uncapped, decode_capped is decode; under a cap it either agrees or says how big.
        for cap in [usize::MAX, FUZZ_MAX_HEADER_BYTES as usize, 0] {
            let mut r = Reader::new(bytes.clone());
            let (capped, oversized) =
                Properties::decode_capped(&mut r, cap).expect("the cap refused valid properties");
            assert_eq!(r.offset(), used, "capped decoding consumed differently");
            match oversized {
                None => assert_eq!(encoded(&capped), encoded(&props)),
                Some(size) => {
                    assert_eq!(size, used, "the reported size is not the encoded size");
                    assert!(size > cap, "over a cap it is under");
                }
            }
        }
    }
}

fn encoded(props: &Properties) -> BytesMut {
    let mut out = BytesMut::new();
    props.encode(&mut out);
    out
}

/// How deep tables and lists nest: a flat table is 1.
fn table_depth(table: &FieldTable) -> usize {
    1 + table.values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(value: &FieldValue) -> usize {
    match value {
        FieldValue::Map(t) => table_depth(t),
        FieldValue::List(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Arbitrary bytes as what a server reads first: the 8-byte client preface, then frames,
/// through the codec configured as the server's reader is (with its header cap). No panic;
/// a preface that parses is exactly the one `client_preface` writes for its version; the
/// frames after it get the `frame_decode` checks. An `Open` frame (credentials, vhost),
/// once the protocol has one, is covered here by the frame decoding.
pub fn handshake(data: &[u8]) {
    let Some((preface, frames)) = data.split_first_chunk::<PREFACE_BYTES>() else {
        return;
    };
    match parse_client_preface(*preface) {
        Ok(version) => assert_eq!(&client_preface(version), preface),
        // The refusal is sent to the client as text: building it must not fail.
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    frame_decode(frames);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A fuzz target's check.
    type Check = fn(&[u8]);

    /// Every committed corpus file of the protocol's fuzz targets (`fuzz/corpus/<target>/`),
    /// seeds and crash inputs alike, through the same checks as the fuzzers, so CI keeps them
    /// honest without libFuzzer.
    #[test]
    fn replays_committed_fuzz_corpora() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let targets: [(&str, Check); 3] = [
            ("frame_decode", super::frame_decode),
            ("field_table", super::field_table),
            ("handshake", super::handshake),
        ];
        for (target, check) in targets {
            let dir = root.join(target);
            let mut files = 0;
            for entry in std::fs::read_dir(&dir).expect("corpus directory") {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                // Shown only when the test fails: which file broke the check.
                eprintln!("{target}: {}", path.display());
                check(&data);
                files += 1;
            }
            assert!(files > 0, "no corpus in {}", dir.display());
        }
    }
}
