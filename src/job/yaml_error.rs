//! Turns serde_yaml's errors into [`JobError`]s: the location moves from the message into the
//! `path:line:col:` prefix, and the few errors serde_yaml cannot locate or explain well
//! (a second document, a duplicate key, alias expansion) get a location and a fix.

use super::locate::{locate_all, second_document, Location};
use super::JobError;
use std::path::Path;

/// Converts a serde_yaml error for `text` (the file at `path`).
///
/// `syntax` is true when the text is not YAML at all (as opposed to YAML that is not a job).
pub(crate) fn job_error(
    err: &serde_yaml::Error,
    text: &str,
    path: &Path,
    syntax: bool,
) -> JobError {
    let mut location: Option<Location> = err.location().map(|l| (l.line(), l.column()));
    let raw = strip_marks(&err.to_string());
    let message = if raw.contains("more than one document") {
        location = second_document(text);
        "found a second YAML document (`---`): put one job per file".to_string()
    } else if raw.contains("repetition limit exceeded") {
        "aliases (`*name`) expand to too much data, as in an alias bomb: \
         write the values out instead"
            .to_string()
    } else if raw.contains("recursion limit exceeded") {
        "values are nested too deeply: a job file needs only a few levels".to_string()
    } else if let Some((keys, field)) = duplicate_field(&raw) {
        let mut keys: Vec<&str> = keys.split('.').filter(|k| !k.is_empty()).collect();
        keys.push(field);
        if let Some(second) = locate_all(text, &keys).get(1) {
            location = Some(*second);
        }
        format!("{raw}: keep only one")
    } else if syntax {
        format!("invalid YAML: {raw} (check the indentation and quoting around here)")
    } else {
        raw
    };
    JobError {
        path: path.to_path_buf(),
        location,
        message,
    }
}

/// For `duplicate field `x`` (optionally after a `parent.path: ` prefix), the parent path and `x`.
fn duplicate_field(message: &str) -> Option<(&str, &str)> {
    let (keys, rest) = match message.split_once(": duplicate field `") {
        Some((keys, rest)) => (keys, rest),
        None => ("", message.strip_prefix("duplicate field `")?),
    };
    if keys.contains(['[', ' ']) {
        return None;
    }
    let field = rest.strip_suffix('`')?;
    Some((keys, field))
}

/// Removes serde_yaml's ` at line L column C` and ` at position P` from a message, since the
/// location is printed once, in front.
fn strip_marks(message: &str) -> String {
    let mut out = message.to_string();
    for marker in [" at line ", " at position "] {
        while let Some(start) = out.find(marker) {
            let tail = &out[start + marker.len()..];
            let mut end = tail.bytes().take_while(u8::is_ascii_digit).count();
            if end == 0 {
                break;
            }
            if let Some(column) = tail[end..].strip_prefix(" column ") {
                let digits = column.bytes().take_while(u8::is_ascii_digit).count();
                end += " column ".len() + digits;
            }
            out.replace_range(start..start + marker.len() + end, "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_stripped_once_located() {
        assert_eq!(
            strip_marks("did not find expected key at line 3 column 1, while parsing a block mapping at line 1 column 1"),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(
            strip_marks("control characters at position 7"),
            "control characters"
        );
        assert_eq!(strip_marks("at line breaks"), "at line breaks");
    }

    #[test]
    fn duplicate_fields_are_recognised_with_their_parent() {
        assert_eq!(
            duplicate_field("duplicate field `name`"),
            Some(("", "name"))
        );
        assert_eq!(
            duplicate_field("resources: duplicate field `cpus`"),
            Some(("resources", "cpus"))
        );
        assert_eq!(
            duplicate_field("manager.steps[0]: duplicate field `action`"),
            None
        );
    }

    #[test]
    fn duplicate_keys_point_at_the_second_one() {
        let text = "name: a\nresources:\n  cpus: 1\n  cpus: 2\n";
        let err = serde_yaml::from_str::<super::super::raw::RawJob>(text).unwrap_err();
        let job = job_error(&err, text, Path::new("j.yaml"), false);
        assert_eq!(job.location, Some((4, 3)));
        assert_eq!(
            job.message,
            "resources: duplicate field `cpus`: keep only one"
        );
    }

    #[test]
    fn syntax_errors_say_the_yaml_is_invalid() {
        let text = "name: x\n  bad: indent\n";
        let err = serde_yaml::from_str::<serde::de::IgnoredAny>(text).unwrap_err();
        let job = job_error(&err, text, Path::new("j.yaml"), true);
        assert_eq!(job.location, Some((2, 6)));
        assert!(
            job.message
                .starts_with("invalid YAML: mapping values are not allowed"),
            "{}",
            job.message
        );
        assert!(!job.message.contains("line 2"), "{}", job.message);
    }
}
