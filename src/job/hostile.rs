//! Cheap checks that run before the YAML parser, so hostile or accidental input (huge files,
//! binary data, deep nesting, empty files) is refused fast with one clear error.
//!
//! Deep flow nesting needs a guard of its own: libyaml accepts it, but its time grows
//! quadratically with the depth of `{a: {a: ...` (10 000 levels take seconds). Alias bombs need
//! none: serde_yaml stops expanding aliases past a repetition limit, and no field of a job
//! holds nested lists, so an alias can never expand into more than one small value.

use super::locate::Location;
use super::MAX_JOB_FILE_BYTES;

/// Deepest nesting of flow collections (`[...]`, `{...}`) accepted. A job needs three at most.
pub(crate) const MAX_FLOW_NESTING: usize = 64;

/// Refuses text longer than [`MAX_JOB_FILE_BYTES`].
pub(crate) fn check_size(len: u64) -> Result<(), String> {
    if len <= MAX_JOB_FILE_BYTES {
        return Ok(());
    }
    Err(format!(
        "file is {len} bytes, more than the {MAX_JOB_FILE_BYTES}-byte (1 MiB) limit for a job file: \
         is this the right file? (put large data in the repository instead)"
    ))
}

/// The 1-based line and column of byte `offset` in `bytes` (columns count characters).
pub(crate) fn location_of(bytes: &[u8], offset: usize) -> Location {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// Refuses bytes that are not UTF-8 text: NUL bytes (binary files, UTF-16) or invalid UTF-8.
pub(crate) fn check_text_bytes(bytes: &[u8]) -> Result<&str, (Location, String)> {
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        return Err((
            location_of(bytes, nul),
            "file contains NUL bytes: a job file must be YAML text in UTF-8 \
             (is this a binary file, or saved as UTF-16?)"
                .into(),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        (
            location_of(bytes, e.valid_up_to()),
            "file is not valid UTF-8: save the job file as UTF-8 text".into(),
        )
    })
}

/// True when the text holds no YAML content: only blank lines, comments or document markers.
pub(crate) fn is_empty(text: &str) -> bool {
    text.lines().all(|line| {
        let t = line.trim().trim_start_matches('\u{feff}');
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// Where flow collections nest deeper than [`MAX_FLOW_NESTING`], if they do.
///
/// A light scanner: it skips comments, quoted strings and block scalars (`|`, `>`), and counts a
/// bracket outside a flow collection only where a value starts, so prose like `fix a[0]` in a
/// plain string is not counted. It may over-count in pathological plain text; the limit is far
/// above what any job needs.
pub(crate) fn too_deep(text: &str) -> Option<Location> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut block_scalar_parent: Option<usize> = None;
    for (index, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar_parent {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar_parent = None;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut value_start = quote.is_none() && depth == 0;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let spaced = |ch: Option<char>| ch.is_none_or(|ch| ch == ' ' || ch == '\t');
            if let Some(q) = quote {
                let escaped = c == '\\' && q == '"';
                let doubled_quote = c == q && q == '\'' && next == Some('\'');
                if escaped || doubled_quote {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            } else if c == '#' && spaced(prev) {
                break;
            } else if depth > 0 {
                match c {
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_NESTING {
                            return Some((index + 1, i + 1));
                        }
                    }
                    ']' | '}' => depth -= 1,
                    '\'' | '"' if prev.is_none_or(|p| " \t[{,:".contains(p)) => quote = Some(c),
                    _ => {}
                }
            } else if value_start {
                match c {
                    ' ' | '\t' => {}
                    '-' | '?' if spaced(next) => {}
                    '&' | '!' => {
                        while i + 1 < chars.len() && !spaced(chars.get(i + 1).copied()) {
                            i += 1;
                        }
                    }
                    '[' | '{' => {
                        depth = 1;
                        value_start = false;
                    }
                    '\'' | '"' => {
                        quote = Some(c);
                        value_start = false;
                    }
                    '|' | '>' => {
                        block_scalar_parent = Some(indent);
                        break;
                    }
                    _ => value_start = false,
                }
            } else if c == ':' && spaced(next) {
                value_start = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::load_file;
    use super::super::testutil::{parse, quickly, refused, write};
    use super::*;

    #[test]
    fn sizes_up_to_the_cap_pass() {
        assert!(check_size(MAX_JOB_FILE_BYTES).is_ok());
        let err = check_size(MAX_JOB_FILE_BYTES + 1).unwrap_err();
        assert!(
            err.contains("1048577 bytes") && err.contains("1048576-byte"),
            "{err}"
        );
    }

    #[test]
    fn nul_bytes_are_located() {
        let (at, msg) = check_text_bytes(b"name: x\ntask: a\0b\n").unwrap_err();
        assert_eq!(at, (2, 8));
        assert!(msg.contains("NUL bytes"), "{msg}");
    }

    #[test]
    fn invalid_utf8_is_located() {
        let (at, msg) = check_text_bytes(b"name: x\n  \xff\xfe").unwrap_err();
        assert_eq!(at, (2, 3));
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }

    #[test]
    fn comments_and_markers_alone_are_empty() {
        assert!(is_empty(""));
        assert!(is_empty("\n  \n# only a comment\n---\n...\n"));
        assert!(!is_empty("name: x\n"));
    }

    #[test]
    fn ordinary_nesting_is_allowed() {
        let job = "manager: { mode: script, steps: [{ action: finish, argument: 'done [x]' }] }\n\
                   task: fix a[0] and {this} [[[[ in plain text\n\
                   verify: \"[[[[[[\"\n\
                   env: { A: 'it''s [' }\n";
        assert_eq!(too_deep(job), None);
    }

    #[test]
    fn deep_flow_nesting_is_located() {
        let deep = format!("name: x\ncommand: {}\n", "[".repeat(10_000));
        assert_eq!(too_deep(&deep), Some((2, 10 + MAX_FLOW_NESTING)));
        let maps = format!("env: {}\n", "{a: ".repeat(100));
        assert!(too_deep(&maps).is_some());
    }

    #[test]
    fn brackets_in_block_scalars_and_comments_are_not_nesting() {
        let brackets = "[".repeat(100);
        let job = format!("task: |\n  {brackets}\n  more\n# {brackets}\nname: x # {brackets}\n");
        assert_eq!(too_deep(&job), None);
    }

    #[test]
    fn anchors_and_sequence_items_start_values() {
        let deep = format!("- &a !!seq {}\n", "[".repeat(100));
        assert!(too_deep(&deep).is_some());
    }

    #[test]
    fn a_file_over_the_cap_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "big.yaml", vec![b'#'; 2 << 20]);
        let errors = quickly(|| load_file(&path)).unwrap_err();
        assert_eq!(errors.len(), 1);
        let msg = &errors[0].message;
        assert!(
            msg.contains("2097152 bytes") && msg.contains("1048576-byte (1 MiB) limit"),
            "{msg}"
        );
        let text = "#".repeat(2 << 20);
        assert!(refused(&text).message.contains("2097152 bytes"));
    }

    #[test]
    fn a_file_just_under_the_cap_is_parsed_quickly() {
        let line = "  lorem ipsum dolor sit amet, [consectetur] {adipiscing} 'elit'\n";
        let body = line.repeat((MAX_JOB_FILE_BYTES as usize - 100) / line.len());
        let spec = quickly(|| parse(&format!("name: big\ntask: |\n{body}"))).unwrap();
        assert!(spec.is_agent());
    }

    #[test]
    fn binary_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let path = write(dir.path(), "garbage.yaml", &garbage);
        let errors = quickly(|| load_file(&path)).unwrap_err();
        assert!(
            errors[0].message.contains("NUL bytes"),
            "{}",
            errors[0].message
        );
        let path = write(dir.path(), "latin1.yaml", b"name: caf\xe9\ntask: x\n");
        let errors = load_file(&path).unwrap_err();
        assert_eq!(errors[0].location, Some((1, 10)));
        assert!(
            errors[0].message.contains("not valid UTF-8"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly() {
        let mut bomb = String::from(
            "name: bomb\ntask: x\nlol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        );
        for i in 1..10 {
            let refs = vec![format!("*lol{}", i - 1); 9].join(", ");
            bomb.push_str(&format!("lol{i}: &lol{i} [{refs}]\n"));
        }
        let err = refused(&bomb);
        assert_eq!(err.location, Some((3, 1)));
        assert!(
            err.message.starts_with("unknown field `lol0`"),
            "{}",
            err.message
        );

        // The same bomb inside known fields: no field holds nested lists, so nothing expands.
        let inside = bomb
            .replace("\nlol", "\n  lol")
            .replacen("task: x\n", "task: x\nenv:\n", 1);
        let err = refused(&inside);
        assert!(
            err.message.contains("invalid type: sequence"),
            "{}",
            err.message
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        for text in [
            format!("name: x\ntask: t\nverify: {}\n", "[".repeat(10_000)),
            "{a: ".repeat(100_000),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ] {
            let err = refused(&text);
            assert!(
                err.message
                    .starts_with("brackets are nested more than 64 levels deep"),
                "{}",
                err.message
            );
            assert!(err.location.is_some());
        }
        let err = refused(&format!(
            "name: x\ntask: t\nverify: {}\n",
            "[".repeat(10_000)
        ));
        assert_eq!(err.location, Some((3, 8 + 65)));
    }
}
