//! The line reader of `classify` and `serve` on any byte stream, read in chunks of any size: it yields exactly the
//! stream's lines, in order, each the line itself, "too long" past the cap, or "not UTF-8".

use crate::{fuzz, holds};
use cosee_runtime::LineReader;
use proptest::prelude::*;
use std::io::BufReader;

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..24),
        3 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\xff\xfe".to_vec()),
        1 => Just("é€😀".as_bytes().to_vec()),
        1 => (any::<u8>(), 0usize..200).prop_map(|(b, n)| vec![b; n]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

#[test]
fn fuzz_line_reader() {
    fuzz("lines", 1024, (stream(), 0usize..64, 1usize..32), |(bytes, limit, chunk)| {
        let mut expected: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if expected.last().is_some_and(|l| l.is_empty()) {
            expected.pop();
        }
        let mut reader = LineReader::with_limit(BufReader::with_capacity(chunk, bytes.as_slice()), limit);
        let mut n = 0;
        while let Some(line) = reader.next_line().map_err(|e| TestCaseError::fail(e.to_string()))? {
            holds!(n < expected.len(), "line {} past the {} of the stream", n + 1, expected.len());
            let want = expected[n];
            match line {
                Ok(text) => {
                    holds!(want.len() <= limit && text.as_bytes() == want, "line {}: {text:?} for {want:?}", n + 1)
                }
                Err(e) => holds!(
                    want.len() > limit || std::str::from_utf8(want).is_err(),
                    "line {} refused ({e}) though it is {} bytes of UTF-8",
                    n + 1,
                    want.len()
                ),
            }
            n += 1;
        }
        holds!(n == expected.len(), "{n} lines read, the stream has {}", expected.len());
        Ok(())
    });
}
