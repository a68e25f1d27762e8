//! Text from jobs shown on a terminal. Job output and the manager's words are written by code
//! nobody reviewed; copied raw to a terminal, their control sequences act on it: OSC 52 writes
//! the clipboard, OSC 0 sets the title, `ESC [2J` clears the screen, a lone `\r` overwrites a
//! line with a forged one, C1 controls (U+0080–U+009F) and bidi overrides do the same by other
//! means. On a terminal they are shown as visible escapes (`\x1b`, `\u{9b}`, `\u{202e}`); the
//! stored data stays byte-exact, and `--raw` or a pipe gets it as it is.

use std::io::IsTerminal;

/// Set to `1` to treat stdout as a terminal (tests exercise the terminal path without
/// a pty).
pub const ASSUME_TTY: &str = "RUNNER_ASSUME_TTY";

/// Whether stdout is a terminal (or [`ASSUME_TTY`] says to act as if).
pub fn stdout_is_terminal() -> bool {
    assumed() || std::io::stdout().is_terminal()
}

fn assumed() -> bool {
    std::env::var(ASSUME_TTY).is_ok_and(|v| v == "1")
}

/// A stream of output made safe to show: newlines and tabs stay, a `\r` stays only right before
/// a `\n` (a CRLF line end overwrites nothing), everything else that steers a terminal becomes a
/// visible escape. Holds at most an incomplete UTF-8 sequence or a trailing `\r` between chunks.
#[derive(Default)]
pub struct Visible {
    pending: Vec<u8>,
}

impl Visible {
    /// Takes a chunk; returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut out = String::with_capacity(buf.len());
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    // A `\r` at the very end waits: the next chunk tells whether `\n` follows.
                    if let Some(held) = escape_into(text, true, &mut out) {
                        self.pending = held.as_bytes().to_vec();
                    }
                    return out.into_bytes();
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    let valid = std::str::from_utf8(valid).expect("checked valid");
                    // Something other than `\n` follows `valid`: a `\r` ending it is shown.
                    escape_into(valid, false, &mut out);
                    match e.error_len() {
                        Some(bad) => {
                            for b in &after[..bad] {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete sequence at the end: wait for the rest of it.
                            self.pending = after.to_vec();
                            return out.into_bytes();
                        }
                    }
                }
            }
        }
    }

    /// What is still held, shown.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = String::new();
        for b in rest {
            match b {
                b'\r' => out.push_str("\\r"),
                b => out.push_str(&format!("\\x{b:02x}")),
            }
        }
        out.into_bytes()
    }
}

/// Escapes `text` into `out`. With `at_end`, a final `\r` is not decided but returned to be held.
fn escape_into<'a>(text: &'a str, at_end: bool, out: &mut String) -> Option<&'a str> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => match chars.peek() {
                Some((_, '\n')) => out.push('\r'),
                None if at_end => return Some(&text[i..]),
                _ => out.push_str("\\r"),
            },
            c => push_char(c, out),
        }
    }
    None
}

/// One character: as it is, or as a visible escape if it steers a terminal.
fn push_char(c: char, out: &mut String) {
    let code = c as u32;
    match c {
        '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{code:02x}")),
        '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            out.push_str(&format!("\\u{{{code:x}}}"))
        }
        c => out.push(c),
    }
}

/// One line of text (an event's detail, the manager's progress) made safe to show on one line:
/// newlines and tabs are escaped too.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_char(c, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(chunks: &[&[u8]]) -> String {
        let mut v = Visible::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(v.push(c));
        }
        out.extend(v.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn control_sequences_become_visible_and_text_stays() {
        let text = show(&[b"ok\tline\n\x1b]52;c;ZXZpbA==\x07\x1b[2J\rother-job succeeded\r\n"]);
        assert_eq!(
            text,
            "ok\tline\n\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\rother-job succeeded\r\n"
        );
    }

    #[test]
    fn c1_controls_bidi_overrides_and_invalid_bytes_become_visible() {
        let text = show(&["a\u{9b}2J b\u{202e}c é ✓".as_bytes(), b"\xff\n"]);
        assert_eq!(text, "a\\u{9b}2J b\\u{202e}c é ✓\\xff\n");
    }

    #[test]
    fn sequences_split_across_chunks_are_decided_with_the_next_chunk() {
        // A CR at a chunk's end, then LF: a line end. A CR, then text: visible.
        assert_eq!(show(&[b"a\r", b"\nb\r", b"c"]), "a\r\nb\\rc");
        // A C1 control and a character split between chunks.
        assert_eq!(
            show(&[b"x\xc2", b"\x9b", b"\xe2\x9c", b"\x93"]),
            "x\\u{9b}✓"
        );
        assert_eq!(show(&[b"end\r"]), "end\\r");
    }

    #[test]
    fn one_line_escapes_line_breaks_too() {
        assert_eq!(
            one_line("turn 1: done\n2026 other-job succeeded\x1b]0;t\x07"),
            "turn 1: done\\x0a2026 other-job succeeded\\x1b]0;t\\x07"
        );
    }
}
