//! One turn's output, kept within a bound. A command Aider runs can print without limit (400 MB
//! in one turn); the session keeps the first [`HEAD`] and last [`TAIL`] bytes and counts what it
//! drops between them, like the capped log. The manager reads a short head and a longer tail
//! ([`crate::agent::protocol::OUTPUT_HEAD`], [`crate::agent::protocol::OUTPUT_TAIL`]), both far
//! inside these; the full output stays in the log and the transcript.

/// Bytes kept from the start of a turn's output.
pub const HEAD: usize = 64 << 10;
/// Bytes kept from the end of a turn's output.
pub const TAIL: usize = 256 << 10;

/// Text with its middle cut once it passes [`HEAD`] + [`TAIL`] bytes. Holds at most
/// `HEAD + 2 × TAIL` bytes: the tail is trimmed when it reaches twice its size, so each byte is
/// moved at most once.
#[derive(Debug, Default)]
pub struct HeadTail {
    head: String,
    tail: String,
    /// Bytes dropped between head and tail.
    cut: u64,
}

impl HeadTail {
    pub fn push_str(&mut self, mut text: &str) {
        if self.head.len() < HEAD {
            let take = floor_boundary(text, HEAD - self.head.len());
            self.head.push_str(&text[..take]);
            text = &text[take..];
        }
        self.tail.push_str(text);
        if self.tail.len() >= 2 * TAIL {
            self.trim();
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The text (head, a line saying how much was cut, tail), leaving this empty.
    pub fn take(&mut self) -> String {
        self.trim();
        let mut text = std::mem::take(&mut self.head);
        if self.cut > 0 {
            text.push_str(&format!(
                "\n[runner: {} bytes of output cut here]\n",
                self.cut
            ));
        }
        text.push_str(&std::mem::take(&mut self.tail));
        self.cut = 0;
        text
    }

    /// Drops the front of the tail beyond [`TAIL`] bytes (at a character boundary).
    fn trim(&mut self) {
        if self.tail.len() <= TAIL {
            return;
        }
        let mut drop = self.tail.len() - TAIL;
        while !self.tail.is_char_boundary(drop) {
            drop += 1;
        }
        self.tail.drain(..drop);
        self.cut += drop as u64;
    }
}

/// The largest index ≤ `at` that is a character boundary of `text` (its length if shorter).
fn floor_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let mut i = at;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut b = HeadTail::default();
        b.push_str("hello ");
        b.push_str("wörld");
        assert_eq!(b.take(), "hello wörld");
        assert_eq!(b.take(), "");
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_marks_the_cut() {
        let mut b = HeadTail::default();
        b.push_str("HEAD");
        let line = "ä middle line\n";
        let total = 3 * (HEAD + TAIL);
        let mut pushed = 4;
        while pushed < total {
            b.push_str(line);
            pushed += line.len();
            assert!(b.held() <= HEAD + 2 * TAIL);
        }
        b.push_str("the end\n> ");
        let text = b.take();
        assert!(text.starts_with("HEADä middle"));
        assert!(text.ends_with("ä middle line\nthe end\n> "));
        assert!(text.contains("bytes of output cut here]\n"));
        assert!(text.len() <= HEAD + TAIL + 100);
    }
}
