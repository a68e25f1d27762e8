//! Finds where a key is written in a job file, for errors that serde cannot locate (rules across
//! several fields, paths that do not exist, duplicate keys, a second document).
//!
//! This is a small indentation-aware scanner for block-style YAML, not a parser: it looks for
//! `key:` at the indentation of each level's first key, and for `key:` inside a one-line flow
//! mapping such as `resources: { cpus: 1.5 }`. When it cannot find a key, callers fall back to
//! the parent key, then to no location, so a wrong guess is never worse than no location.

/// A 1-based line and column.
pub(crate) type Location = (usize, usize);

/// One non-blank, non-comment line of the file.
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    /// Leading spaces.
    indent: usize,
    /// The line after its indentation.
    content: &'a str,
}

fn content_lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let raw = if i == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let content = raw.trim_start_matches(' ');
            let trimmed = content.trim();
            let blank = trimmed.is_empty() || trimmed.starts_with('#');
            let marker = raw.starts_with("---") || raw.starts_with("...") || raw.starts_with('%');
            (!blank && !marker).then(|| Line {
                number: i + 1,
                indent: raw.len() - content.len(),
                content,
            })
        })
        .collect()
}

/// If `content` starts with `key:` (plain or quoted), the length of that prefix up to the colon.
fn key_prefix(content: &str, key: &str) -> Option<usize> {
    let quoted = [format!("\"{key}\""), format!("'{key}'"), key.to_string()];
    let written = quoted.iter().find(|q| content.starts_with(q.as_str()))?;
    let rest = &content[written.len()..];
    let spaces = rest.len() - rest.trim_start_matches(' ').len();
    let after = rest[spaces..].strip_prefix(':')?;
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(written.len() + spaces + 1)
}

/// Finds `key:` inside a one-line flow mapping (`{ cpus: 1.5, memory: 2g }`); returns the
/// char offset of the key in `flow`.
fn flow_key(flow: &str, key: &str) -> Option<usize> {
    let mut start = 0;
    while let Some(found) = flow[start..].find(key) {
        let at = start + found;
        let before = flow[..at].trim_end_matches(' ');
        let boundary = before.ends_with('{') || before.ends_with(',');
        if boundary && key_prefix(&flow[at..], key).is_some() {
            return Some(flow[..at].chars().count());
        }
        start = at + key.len();
    }
    None
}

/// Every place where the last key of `keys` is written under the first match of its parents.
pub(crate) fn locate_all(text: &str, keys: &[&str]) -> Vec<Location> {
    let lines = content_lines(text);
    let mut scope: &[Line] = &lines;
    let Some((last, parents)) = keys.split_last() else {
        return Vec::new();
    };
    for (depth, parent) in parents.iter().enumerate() {
        let Some(child_indent) = scope.first().map(|l| l.indent) else {
            return Vec::new();
        };
        let Some(pos) = scope
            .iter()
            .position(|l| l.indent == child_indent && key_prefix(l.content, parent).is_some())
        else {
            return Vec::new();
        };
        let line = &scope[pos];
        let end = scope[pos + 1..]
            .iter()
            .position(|l| l.indent <= line.indent)
            .map_or(scope.len(), |n| pos + 1 + n);
        if end == pos + 1 {
            // No block children: look for the remaining keys in a flow mapping on this line.
            return locate_in_flow(line, parent, &keys[depth + 1..])
                .into_iter()
                .collect();
        }
        scope = &scope[pos + 1..end];
    }
    let Some(child_indent) = scope.first().map(|l| l.indent) else {
        return Vec::new();
    };
    scope
        .iter()
        .filter(|l| l.indent == child_indent && key_prefix(l.content, last).is_some())
        .map(|l| (l.number, l.indent + 1))
        .collect()
}

fn locate_in_flow(line: &Line, parent: &str, keys: &[&str]) -> Option<Location> {
    let value_at = key_prefix(line.content, parent)?;
    let mut offset = value_at;
    let mut col = None;
    for key in keys {
        let found = flow_key(&line.content[offset..], key)?;
        let byte = line.content[offset..].char_indices().nth(found)?.0;
        col = Some(line.indent + line.content[..offset].chars().count() + found + 1);
        offset += byte + key.len();
    }
    col.map(|c| (line.number, c))
}

/// Where the key at `keys` is written, if the scanner finds it.
pub(crate) fn locate(text: &str, keys: &[&str]) -> Option<Location> {
    locate_all(text, keys).into_iter().next()
}

/// Where the key at `keys` is written, else its nearest parent that can be found.
pub(crate) fn locate_or_parent(text: &str, keys: &[&str]) -> Option<Location> {
    (1..=keys.len())
        .rev()
        .find_map(|len| locate(text, &keys[..len]))
}

/// The `---` line that starts a second YAML document, if any.
pub(crate) fn second_document(text: &str) -> Option<Location> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let starts_document = line == "---" || line.starts_with("--- ");
        if starts_document && seen_content {
            return Some((i + 1, 1));
        }
        let trimmed = line.trim();
        let blank = trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('%');
        seen_content |= !blank && !starts_document;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "\
# a comment
name: demo
task: |
  name: not a key
  resources: neither
resources:
  # memory comes first
  memory: 2g
  cpus: 1.5
manager: { mode: script, max_turns: 3 }
\"group\": x
";

    #[test]
    fn finds_top_level_keys() {
        assert_eq!(locate(JOB, &["name"]), Some((2, 1)));
        assert_eq!(locate(JOB, &["resources"]), Some((6, 1)));
        assert_eq!(locate(JOB, &["group"]), Some((11, 1)));
    }

    #[test]
    fn ignores_keys_inside_block_scalars() {
        assert_eq!(locate_all(JOB, &["name"]), vec![(2, 1)]);
    }

    #[test]
    fn finds_nested_block_keys() {
        assert_eq!(locate(JOB, &["resources", "cpus"]), Some((9, 3)));
        assert_eq!(locate(JOB, &["resources", "memory"]), Some((8, 3)));
    }

    #[test]
    fn finds_keys_in_one_line_flow_mappings() {
        assert_eq!(locate(JOB, &["manager", "mode"]), Some((10, 12)));
        assert_eq!(locate(JOB, &["manager", "max_turns"]), Some((10, 26)));
    }

    #[test]
    fn falls_back_to_the_parent_key() {
        assert_eq!(locate(JOB, &["resources", "pids"]), None);
        assert_eq!(locate_or_parent(JOB, &["resources", "pids"]), Some((6, 1)));
        assert_eq!(locate_or_parent(JOB, &["budget", "usd"]), None);
    }

    #[test]
    fn finds_every_duplicate() {
        let text = "name: a\nenv:\n  A: 1\nname: b\n";
        assert_eq!(locate_all(text, &["name"]), vec![(1, 1), (4, 1)]);
    }

    #[test]
    fn a_key_prefix_is_not_the_key() {
        assert_eq!(locate("names: x\nname: y\n", &["name"]), Some((2, 1)));
    }

    #[test]
    fn finds_the_second_document() {
        assert_eq!(
            second_document("---\nname: a\n---\nname: b\n"),
            Some((3, 1))
        );
        assert_eq!(second_document("# c\n---\nname: a\n"), None);
    }
}
