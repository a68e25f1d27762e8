//! Redaction of secret values from stored output: a job that prints a secret it was given (an API
//! key, a token) must not leave it in the runner's logs. Values may be split across chunks, so the
//! last few bytes of each chunk are held back until the next one shows they are not the start of
//! a secret.

/// Values shorter than this are not redacted (they would mangle ordinary output).
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces secret values in a byte stream.
#[derive(Default)]
pub struct Redactor {
    /// (value, replacement), longest first.
    secrets: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes held back: they may be the start of a secret.
    carry: Vec<u8>,
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these (name, value) pairs; values shorter than [`MIN_SECRET_LEN`] are skipped.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = secrets
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_SECRET_LEN)
            .map(|(name, v)| {
                (
                    v.as_bytes().to_vec(),
                    format!("[redacted {name}]").into_bytes(),
                )
            })
            .collect();
        list.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let longest = list.first().map_or(0, |(v, _)| v.len());
        Redactor {
            secrets: list,
            carry: Vec::new(),
            longest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Takes a chunk; returns what can be written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let mut out = self.replace(&buf);
        // Hold back a tail that could be the beginning of a secret.
        let hold = self.longest.saturating_sub(1).min(out.len());
        let split = out.len() - hold;
        self.carry = out.split_off(split);
        out
    }

    /// Everything still held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        self.replace(&rest)
    }

    fn replace(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'outer: while i < input.len() {
            for (value, replacement) in &self.secrets {
                if input[i..].starts_with(value) {
                    out.extend_from_slice(replacement);
                    i += value.len();
                    continue 'outer;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
