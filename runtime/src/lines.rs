//! One input per line of a stream, at a bounded cost per line: what `classify` (on stdin) and `serve` read.
//!
//! A line is read into a buffer of at most [`MAX_LINE_BYTES`]; a longer one is skipped up to its newline as it
//! arrives, chunk by chunk, without ever being held whole, and answers [`InputError::LineTooLong`]. So a 10 GB line
//! (a file piped by mistake) costs a scan, not memory, and the next line is read as usual. A line of invalid UTF-8
//! answers [`InputError::InvalidUtf8`]; either way the caller answers that line and goes on.

use crate::error::InputError;
use std::io::{self, BufRead};

/// The longest line, in bytes without its `\n`, that is read as an input: 1 MiB. Far more than a model's
/// `max_seq_len` ever keeps (128 tokens are a few kB of text), small enough for a Pi to hold without notice.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads lines of at most `limit` bytes from `inner`; see the module doc.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    line: Vec<u8>,
    limit: usize,
}

impl<R: BufRead> LineReader<R> {
    /// A reader with the documented cap, [`MAX_LINE_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE_BYTES)
    }

    /// A reader whose lines may hold at most `limit` bytes (tests use small ones).
    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self { inner, line: Vec::new(), limit }
    }

    /// The next line without its `\n`: `None` at the end of the stream, `Some(Err(_))` for a line that cannot be
    /// an input (too long, not UTF-8). A last line without a final newline is a line too. Only reading fails.
    pub fn next_line(&mut self) -> io::Result<Option<Result<&str, InputError>>> {
        self.line.clear();
        // Bytes of the line so far, those kept and those skipped: `> limit` means it is being skipped.
        let mut length: u64 = 0;
        let mut read_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            read_any = true;
            let (part, used, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], at + 1, true),
                None => (chunk, chunk.len(), false),
            };
            length += part.len() as u64;
            if length <= self.limit as u64 {
                self.line.extend_from_slice(part);
            } else if !self.line.is_empty() {
                // Over the cap: what was kept is dropped at once, the rest only counted.
                self.line = Vec::new();
            }
            self.inner.consume(used);
            if ended {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        if length > self.limit as u64 {
            return Ok(Some(Err(InputError::LineTooLong { bytes: length, limit: self.limit })));
        }
        Ok(Some(std::str::from_utf8(&self.line).map_err(|e| InputError::InvalidUtf8 { offset: e.valid_up_to() })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    fn all_lines(bytes: &[u8], limit: usize, capacity: usize) -> Vec<Result<String, InputError>> {
        let mut reader = LineReader::with_limit(BufReader::with_capacity(capacity, bytes), limit);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(line.map(str::to_string));
        }
        out
    }

    #[test]
    fn lines_empty_lines_and_a_last_line_without_newline() {
        for capacity in [1, 3, 64] {
            let lines = all_lines(b"ab\n\nc\r\nlast", 8, capacity);
            assert_eq!(lines, [Ok("ab".into()), Ok("".into()), Ok("c\r".into()), Ok("last".into())]);
            assert!(all_lines(b"", 8, capacity).is_empty());
            assert_eq!(all_lines(b"\n", 8, capacity), [Ok(String::new())]);
        }
    }

    #[test]
    fn a_line_over_the_cap_is_answered_and_skipped_in_order() {
        for capacity in [1, 4, 5, 1024] {
            // Exactly the cap is a line; one byte more is not, however the chunks fall.
            let lines = all_lines(b"12345\n123456\nok\n1234567890", 5, capacity);
            assert_eq!(
                lines,
                [
                    Ok("12345".into()),
                    Err(InputError::LineTooLong { bytes: 6, limit: 5 }),
                    Ok("ok".into()),
                    Err(InputError::LineTooLong { bytes: 10, limit: 5 }),
                ],
                "capacity {capacity}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_an_input_error_and_reading_goes_on() {
        let lines = all_lines(b"ok\nbad \xff\nnext\n", 64, 2);
        assert_eq!(lines, [Ok("ok".into()), Err(InputError::InvalidUtf8 { offset: 4 }), Ok("next".into())]);
    }

    /// A stream that would take gigabytes to hold: a line of `len` bytes then "after\n", produced on the fly.
    struct Endless {
        left: u64,
        tail: &'static [u8],
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left > 0 {
                let n = buf.len().min(self.left as usize);
                buf[..n].fill(b'x');
                self.left -= n as u64;
                return Ok(n);
            }
            let n = buf.len().min(self.tail.len());
            buf[..n].copy_from_slice(&self.tail[..n]);
            self.tail = &self.tail[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_huge_line_is_never_held() {
        let huge = 64 * MAX_LINE_BYTES as u64;
        let mut reader = LineReader::new(BufReader::new(Endless { left: huge, tail: b"\nafter\n" }));
        let first = reader.next_line().unwrap().unwrap();
        assert_eq!(first, Err(InputError::LineTooLong { bytes: huge, limit: MAX_LINE_BYTES }));
        // Structural, not a timing: the buffer never grew past the cap (it was dropped once the cap was passed).
        assert!(reader.line.capacity() <= 2 * MAX_LINE_BYTES, "{} bytes held", reader.line.capacity());
        assert_eq!(reader.next_line().unwrap().unwrap(), Ok("after"));
        assert!(reader.next_line().unwrap().is_none());
    }
}
