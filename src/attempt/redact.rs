//! Redaction of secret values from stored and shown output: a job that prints a secret it was
//! given (an API key, a token) must not leave it in the runner's logs, transcripts or events.
//!
//! Each value is looked for as printed and in the encodings a script reaches for without trying
//! to hide it: hex (both cases), URL-encoding, and base64 (standard and URL-safe, at each of the
//! three byte alignments the value can have inside a longer encoded text; only the characters
//! that depend on the value alone are matched, so the few bits at each edge stay).
//!
//! Tools wrap encoded text (`base64` at 76 characters, `xxd -p` at 60), so an encoded form also
//! matches with line breaks between its characters (at most one per [`WRAP_MIN`] of them); the
//! breaks are kept after the replacement, so lines stay lines.
//!
//! The output is a stream: a value may be split across chunks (two writes a moment apart). A
//! [`Redactor`] is one stream's state: it holds back the last (longest reach − 1) bytes, which
//! could be the start of a value, until the next chunk or [`Redactor::finish`] settles them.
//! One redactor per stream, shared by every writer of that stream, so the log and the stored
//! transcript see the same redacted bytes.

use std::sync::Arc;

/// Values shorter than this are not redacted (they would mangle ordinary output).
pub const MIN_SECRET_LEN: usize = 6;

/// Encoded forms may be wrapped into lines of at least this many characters.
pub const WRAP_MIN: usize = 16;

/// One form of one secret to look for.
struct Pattern {
    bytes: Vec<u8>,
    replacement: Vec<u8>,
    /// The most line-break bytes (`\n`, `\r`) allowed between its characters: 0 for the value
    /// as it is, some for an encoding that tools wrap.
    breaks: usize,
}

impl Pattern {
    /// The most input bytes a match can span.
    fn reach(&self) -> usize {
        self.bytes.len() + self.breaks
    }

    /// The length of the match at the start of `input`, and the line breaks it spans.
    fn matches(&self, input: &[u8]) -> Option<(usize, Vec<u8>)> {
        if self.breaks == 0 {
            return input
                .starts_with(&self.bytes)
                .then(|| (self.bytes.len(), Vec::new()));
        }
        let mut skipped = Vec::new();
        let mut j = 0;
        for (k, &b) in self.bytes.iter().enumerate() {
            while k > 0 && matches!(input.get(j), Some(b'\n' | b'\r')) {
                skipped.push(input[j]);
                j += 1;
            }
            if skipped.len() > self.breaks || input.get(j) != Some(&b) {
                return None;
            }
            j += 1;
        }
        Some((j, skipped))
    }
}

/// The patterns of a job's secrets, longest first, and which bytes can start one.
struct Patterns {
    list: Vec<Pattern>,
    starts: [bool; 256],
    /// The most bytes any match spans.
    reach: usize,
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            list: Vec::new(),
            starts: [false; 256],
            reach: 0,
        }
    }
}

/// Replaces secret values (and their encodings) in a byte stream.
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Arc<Patterns>,
    /// Bytes held back: they may be the start of a secret.
    carry: Vec<u8>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.list.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these (name, value) pairs; values shorter than [`MIN_SECRET_LEN`] are skipped.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut list: Vec<Pattern> = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            for (form, bytes) in encodings(value.as_bytes()) {
                if bytes.len() < MIN_SECRET_LEN || list.iter().any(|p| p.bytes == bytes) {
                    continue;
                }
                let (replacement, breaks) = match form {
                    "" => (format!("[redacted {name}]"), 0),
                    // A CRLF per wrapped line at most.
                    form => (
                        format!("[redacted {name} {form}]"),
                        2 * (bytes.len() / WRAP_MIN),
                    ),
                };
                list.push(Pattern {
                    bytes,
                    replacement: replacement.into_bytes(),
                    breaks,
                });
            }
        }
        // Longest first: where two forms start at the same byte, the longer one wins.
        list.sort_by_key(|p| std::cmp::Reverse(p.bytes.len()));
        let mut starts = [false; 256];
        for p in &list {
            starts[p.bytes[0] as usize] = true;
        }
        let reach = list.iter().map(Pattern::reach).max().unwrap_or(0);
        Redactor {
            patterns: Arc::new(Patterns {
                list,
                starts,
                reach,
            }),
            carry: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.list.is_empty()
    }

    /// A redactor for another stream of the same secrets (nothing held back).
    pub fn fresh(&self) -> Redactor {
        Redactor {
            patterns: self.patterns.clone(),
            carry: Vec::new(),
        }
    }

    /// Redacts a complete text (an event's detail, a verify log): nothing is held back.
    pub fn redact_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let mut r = self.fresh();
        let mut out = r.push(text.as_bytes());
        out.extend(r.finish());
        // Replacements are ASCII and cut nothing but whole values, so the text stays UTF-8.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Takes a chunk; returns what can be written now. What is returned never ends inside a
    /// UTF-8 sequence that the held-back bytes complete, so a valid UTF-8 stream gives valid
    /// UTF-8 pieces.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        // A pattern starting before `settled` lies whole inside `buf` if it is there at all.
        let settled = buf.len().saturating_sub(self.patterns.reach - 1);
        let (mut out, mut end) = self.replace(&buf, settled);
        // Never split a UTF-8 sequence between what is written and what is held: give back the
        // (at most three) bytes of a sequence the held bytes continue. They were copied as they
        // are (a replacement ends where a value ends), and no pattern starts inside them.
        let mut back = 0;
        while back < 3 && end > 0 && end < buf.len() && buf[end] & 0xC0 == 0x80 {
            out.pop();
            end -= 1;
            back += 1;
        }
        self.carry = buf.split_off(end);
        out
    }

    /// How many bytes [`Redactor::push`] holds back now.
    pub fn held(&self) -> usize {
        self.carry.len()
    }

    /// Everything still held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        self.replace(&rest, rest.len()).0
    }

    /// Replaces every pattern that starts before `limit`; returns the output and where in
    /// `input` it stopped (at or past `limit`).
    fn replace(&self, input: &[u8], limit: usize) -> (Vec<u8>, usize) {
        let patterns = &self.patterns;
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'outer: while i < limit {
            // Copy the run of bytes that cannot start a pattern in one go.
            let run = input[i..limit]
                .iter()
                .position(|&b| patterns.starts[b as usize])
                .unwrap_or(limit - i);
            out.extend_from_slice(&input[i..i + run]);
            i += run;
            if i == limit {
                break;
            }
            for p in &patterns.list {
                if let Some((len, breaks)) = p.matches(&input[i..]) {
                    out.extend_from_slice(&p.replacement);
                    out.extend_from_slice(&breaks);
                    i += len;
                    continue 'outer;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        (out, i)
    }
}

/// The forms of a value that are redacted: (label, bytes).
fn encodings(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    let mut forms = vec![("", value.to_vec())];
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(("hex", hex.to_uppercase().into_bytes()));
    forms.push(("hex", hex.into_bytes()));
    forms.push(("url-encoded", url_encode(value).into_bytes()));
    for (label, alphabet) in [("base64", STANDARD), ("base64url", URL_SAFE)] {
        for offset in 0..3 {
            forms.push((label, base64_core(value, offset, &alphabet)));
        }
    }
    forms
}

/// The base64 characters that depend on `value` alone when it starts `offset` bytes after a
/// multiple of three in the encoded data: the characters covering earlier or later bytes differ
/// with those bytes and are left out.
fn base64_core(value: &[u8], offset: usize, alphabet: &base64::alphabet::Alphabet) -> Vec<u8> {
    use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    let engine = GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_encode_padding(false),
    );
    let mut data = vec![0u8; offset];
    data.extend_from_slice(value);
    let encoded = engine.encode(&data).into_bytes();
    // Character k covers bits 6k..6k+6 of the data; the value holds bits 8·offset..8·len.
    let first = (8 * offset).div_ceil(6);
    let last = 8 * data.len() / 6;
    encoded[first..last.min(encoded.len())].to_vec()
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn run(r: &mut Redactor, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(r.push(c.as_bytes()));
        }
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted() {
        let mut r = Redactor::new([("TOKEN", "hunter2-secret")]);
        let text = run(&mut r, &["key=hunt", "er2-se", "cret done"]);
        assert_eq!(text, "key=[redacted TOKEN] done");
    }

    #[test]
    fn a_secret_split_byte_by_byte_is_redacted() {
        let mut r = Redactor::new([("TOKEN", "hunter2-secret")]);
        let text = "a hunter2-secret b";
        let chunks: Vec<String> = text.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        assert_eq!(run(&mut r, &chunks), "a [redacted TOKEN] b");
    }

    #[test]
    fn output_without_secrets_passes_unchanged() {
        let mut r = Redactor::new([("TOKEN", "hunter2-secret")]);
        assert_eq!(run(&mut r, &["hello ", "world\n"]), "hello world\n");
        let mut none = Redactor::new([]);
        assert_eq!(run(&mut none, &["as is"]), "as is");
    }

    #[test]
    fn short_values_are_not_redacted() {
        let mut r = Redactor::new([("X", "ab")]);
        assert_eq!(run(&mut r, &["abc"]), "abc");
    }

    #[test]
    fn a_secret_printed_as_base64_is_redacted_at_every_alignment_in_both_alphabets() {
        let secret = "s3cr3t?value>~~1";
        let r = Redactor::new([("TOKEN", secret)]);
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            for prefix in ["", "a", "ab", "abc", "abcd"] {
                for suffix in ["", "z", "zy", "zyx"] {
                    let encoded = engine.encode(format!("{prefix}{secret}{suffix}"));
                    let text = r.redact_str(&format!("out: {encoded}\n"));
                    assert!(text.contains("[redacted TOKEN base64"), "{text}");
                    // What is left of the encoding covers the bytes around the value and at
                    // most a character and padding at each edge of it.
                    let start = text.find("[redacted").unwrap();
                    let marker = text[start..].find(']').unwrap() + 1;
                    let left = text.len() - "out: \n".len() - marker;
                    let around = (prefix.len() + suffix.len()) * 4 / 3;
                    assert!(left <= around + 6, "{text}");
                }
            }
        }
    }

    #[test]
    fn a_secret_printed_as_hex_or_url_encoded_is_redacted() {
        let secret = "p@ss word/1";
        let r = Redactor::new([("TOKEN", secret)]);
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for printed in [
            hex.clone(),
            hex.to_uppercase(),
            "p%40ss%20word%2F1".to_string(),
        ] {
            let text = r.redact_str(&format!("x={printed};"));
            assert!(!text.contains(&printed), "{text}");
            assert!(text.starts_with("x=[redacted TOKEN "), "{text}");
        }
    }

    #[test]
    fn a_long_secret_printed_as_wrapped_base64_or_hex_is_redacted_in_pieces() {
        let secret = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let r = Redactor::new([("GH_TOKEN", secret)]);
        let wrap = |text: &str, width: usize, end: &str| -> String {
            let chars: Vec<char> = text.chars().collect();
            chars
                .chunks(width)
                .map(|c| c.iter().collect::<String>() + end)
                .collect()
        };
        // `echo "$v" | base64` (76 per line), `xxd -p` (60 per line), CRLF line ends too.
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{secret}\n"));
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for printed in [
            wrap(&b64, 76, "\n"),
            wrap(&hex, 60, "\n"),
            wrap(&b64, 64, "\r\n"),
        ] {
            // Byte by byte, to hold the held-back window to account.
            let mut stream = r.fresh();
            let mut out = Vec::new();
            for b in printed.as_bytes() {
                out.extend(stream.push(&[*b]));
            }
            out.extend(stream.finish());
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("[redacted GH_TOKEN "), "{text}");
            assert_eq!(
                text.matches('\n').count(),
                printed.matches('\n').count(),
                "line breaks are kept: {text}"
            );
            let left = text.len() - text.find(']').unwrap() - 1 + text.find('[').unwrap();
            assert!(left <= 12, "{text}");
        }
    }

    #[test]
    fn held_back_bytes_never_split_a_utf8_character() {
        let mut r = Redactor::new([("TOKEN", "hunter2-secret")]);
        let mut pieces = Vec::new();
        for chunk in ["héllo wörld ✓✓✓", "→ hunter2-", "secret ✓"] {
            pieces.push(r.push(chunk.as_bytes()));
        }
        pieces.push(r.finish());
        for p in &pieces {
            assert!(std::str::from_utf8(p).is_ok(), "{p:?}");
        }
        assert_eq!(
            String::from_utf8(pieces.concat()).unwrap(),
            "héllo wörld ✓✓✓→ [redacted TOKEN] ✓"
        );
    }
}
