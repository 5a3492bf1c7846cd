//! Capturing a command's output as bytes: lines decoded lossily for live display, and what is
//! kept capped per stream (its head and its tail) with a visible marker where bytes were dropped.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::Stream;

/// What `exec` keeps of each stream by default (its `max_output` option changes it).
pub const DEFAULT_EXEC_LIMIT: usize = 1 << 20;
/// What nixdeploy's own commands (Nix, probes) keep of each stream: generous, but bounded.
pub const INTERNAL_LIMIT: usize = 64 << 20;
/// A "line" without a newline is passed on in pieces of this size, so a stream without
/// newlines (`cat /dev/zero`) never accumulates.
const MAX_LINE: usize = 64 << 10;

/// One stream, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The kept bytes, decoded lossily; a marker line stands where bytes were dropped.
    pub text: String,
    /// Bytes were dropped.
    pub truncated: bool,
}

/// Collects one stream: the first half of `limit` bytes and the last half, counting the rest.
/// Live lines are passed on until `limit` bytes have been seen, then one notice.
pub struct Keeper<'a> {
    stream: Stream,
    limit: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    seen: u64,
    line: Vec<u8>,
    on_line: &'a (dyn Fn(Stream, &str) + Send + Sync),
}

impl<'a> Keeper<'a> {
    /// A keeper of at most `limit` bytes (at least 2) for `stream`.
    pub fn new(
        stream: Stream,
        limit: usize,
        on_line: &'a (dyn Fn(Stream, &str) + Send + Sync),
    ) -> Keeper<'a> {
        Keeper {
            stream,
            limit: limit.max(2),
            head: Vec::new(),
            tail: Vec::new(),
            seen: 0,
            line: Vec::new(),
            on_line,
        }
    }

    fn live(&self) -> bool {
        self.seen <= self.limit as u64
    }

    fn emit_line(&mut self) {
        if self.live() {
            let text = String::from_utf8_lossy(&self.line);
            (self.on_line)(self.stream, text.trim_end_matches('\r'));
        }
        self.line.clear();
    }

    /// Takes the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        let was_live = self.live();
        self.seen += chunk.len() as u64;
        // Keep: the head fills first, then a tail window of half the limit.
        let half = self.limit / 2;
        let room = half.saturating_sub(self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..room]);
        let rest = &chunk[room..];
        if !rest.is_empty() {
            let tail_cap = self.limit - half;
            self.tail.extend_from_slice(rest);
            if self.tail.len() > 2 * tail_cap {
                let cut = self.tail.len() - tail_cap;
                self.tail.drain(..cut);
            }
        }
        // Live lines.
        if was_live {
            for piece in chunk.split_inclusive(|b| *b == b'\n') {
                let complete = piece.ends_with(b"\n");
                let body = if complete {
                    &piece[..piece.len() - 1]
                } else {
                    piece
                };
                let mut body = body;
                while !body.is_empty() {
                    let take = (MAX_LINE - self.line.len()).min(body.len());
                    self.line.extend_from_slice(&body[..take]);
                    body = &body[take..];
                    if self.line.len() >= MAX_LINE {
                        self.emit_line();
                    }
                }
                if complete {
                    self.emit_line();
                }
            }
            if !self.live() {
                self.line.clear();
                (self.on_line)(
                    self.stream,
                    &format!(
                        "[nixdeploy: more than {} bytes of output; the rest is not shown]",
                        self.limit
                    ),
                );
            }
        }
    }

    /// What was kept, with the marker where bytes were dropped.
    pub fn finish(mut self) -> Captured {
        if !self.line.is_empty() {
            self.emit_line();
        }
        let kept = (self.head.len() + self.tail.len()) as u64;
        let tail_cap = self.limit - self.limit / 2;
        let tail_start = self.tail.len().saturating_sub(tail_cap);
        let dropped = self.seen - kept + tail_start as u64;
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if dropped == 0 {
            text.push_str(&String::from_utf8_lossy(&self.tail));
            return Captured {
                text,
                truncated: false,
            };
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[nixdeploy: {dropped} bytes of output dropped here; at most {} bytes are kept per stream]\n",
            self.limit
        ));
        text.push_str(&String::from_utf8_lossy(&self.tail[tail_start..]));
        Captured {
            text,
            truncated: true,
        }
    }
}

/// Reads `reader` to its end (a read error ends it too) through a [`Keeper`].
pub async fn capture<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: Stream,
    limit: usize,
    on_line: &(dyn Fn(Stream, &str) + Send + Sync),
) -> Captured {
    let mut keeper = Keeper::new(stream, limit, on_line);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => keeper.push(&buf[..n]),
        }
    }
    keeper.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn keep(chunks: &[&[u8]], limit: usize) -> (Captured, Vec<String>) {
        let lines = Mutex::new(Vec::new());
        let on_line = |_: Stream, l: &str| lines.lock().unwrap().push(l.to_string());
        let mut k = Keeper::new(Stream::Stdout, limit, &on_line);
        for c in chunks {
            k.push(c);
        }
        let captured = k.finish();
        (captured, lines.into_inner().unwrap())
    }

    #[test]
    fn non_utf8_lines_are_decoded_lossily_and_reading_goes_on() {
        let (c, lines) = keep(&[b"caf\xe9\nsecond\n", b"third"], 1024);
        assert_eq!(c.text, "caf\u{fffd}\nsecond\nthird");
        assert!(!c.truncated);
        assert_eq!(lines, ["caf\u{fffd}", "second", "third"]);
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let (_, lines) = keep(&[b"hel", b"lo\nwor", b"ld\n"], 1024);
        assert_eq!(lines, ["hello", "world"]);
    }

    #[test]
    fn output_beyond_the_limit_keeps_head_and_tail_with_a_marker() {
        let mut chunks: Vec<Vec<u8>> = vec![b"first line\n".to_vec()];
        chunks.extend((0..100).map(|_| vec![b'x'; 1000]));
        chunks.push(b"\nlast line\n".to_vec());
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let (c, lines) = keep(&refs, 4096);
        assert!(c.truncated);
        assert!(c.text.starts_with("first line\n"), "{}", &c.text[..40]);
        assert!(c.text.ends_with("last line\n"));
        assert!(c.text.contains("bytes of output dropped here"));
        assert!(c.text.len() < 4096 + 200);
        assert!(lines.last().unwrap().contains("is not shown"));
    }

    #[test]
    fn a_stream_without_newlines_is_passed_on_in_bounded_pieces() {
        let chunk = vec![0u8; 100_000];
        let (c, lines) = keep(&[&chunk, &chunk], 1 << 20);
        assert!(!c.truncated);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(lines.iter().map(String::len).sum::<usize>(), 200_000);
    }
}
