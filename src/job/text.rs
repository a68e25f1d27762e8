//! Text values of a job file that check themselves while being deserialized: names, variable
//! names, git refs, URLs, and any string (which must not hold NUL).
//!
//! The checks run inside `Visitor` methods on purpose: serde_yaml attaches the value's line and
//! column (and its dotted path, e.g. `output.branch`) only to errors raised there.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// Refuses strings that cannot be passed to a program or stored safely.
pub(crate) fn check_text(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("contains a NUL character (`\\0`): remove it".into());
    }
    Ok(())
}

fn check_non_empty(s: &str) -> Result<(), String> {
    check_text(s)?;
    if s.trim().is_empty() {
        return Err("is empty: write a value or remove the field".into());
    }
    Ok(())
}

/// The rule for job names and groups: `[a-z0-9][a-z0-9-]{0,62}`.
pub(crate) fn check_name(s: &str) -> Result<(), String> {
    let first_ok = s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && s.len() <= 63 {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid name: use 1 to 63 lowercase letters, digits and dashes, \
         starting with a letter or digit, like `add-greeting`",
        s.escape_debug()
    ))
}

/// The rule for environment variable and secret names: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn check_env_name(s: &str) -> Result<(), String> {
    let first_ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && s.len() <= 255 {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid variable name: use letters, digits and underscores, \
         not starting with a digit, like `RUST_LOG`",
        s.escape_debug()
    ))
}

/// A safe subset of git's ref-name rules, for `ref` and `output.branch`.
pub(crate) fn check_git_ref(s: &str) -> Result<(), String> {
    let problem = if s.is_empty() {
        Some("it is empty")
    } else if s.starts_with('-') {
        Some("it starts with `-`")
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains a space or control character")
    } else if s.contains("..") {
        Some("it contains `..`")
    } else if s.contains("@{") {
        Some("it contains `@{`")
    } else if s.contains(['~', '^', ':', '?', '*', '[', '\\']) {
        Some("it contains one of `~^:?*[\\`")
    } else if s.starts_with('/') || s.ends_with('/') || s.ends_with('.') || s.ends_with(".lock") {
        Some("it starts or ends with `/`, or ends with `.` or `.lock`")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(format!(
            "`{}` is not a valid git ref ({why}): use a branch, tag or commit like `main` or `fix/greeting`",
            s.escape_debug()
        )),
    }
}

/// The rule for `llm.base_url`: an `http://` or `https://` URL without spaces.
pub(crate) fn check_http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{}` is not an http(s) URL: write one like `https://api.example.com/v1`",
            s.escape_debug()
        )),
    }
}

/// The rule for `image`: a Docker image reference, without spaces and not starting with `-`.
pub(crate) fn check_image(s: &str) -> Result<(), String> {
    check_non_empty(s)?;
    if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` is not a valid image reference: use a name like `runner/base:bookworm`",
            s.escape_debug()
        ));
    }
    Ok(())
}

/// Declares a string newtype whose `Deserialize` runs `$check` on the value.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $expecting:literal, $check:path, $schema:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub(crate) struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $check(v).map_err(E::custom)?;
                        Ok($name(v.to_owned()))
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $schema
            }
        }
    };
}

// The JSON Schema of each (`runner schema`) says what an editor can check: the type and, where
// a regular expression can say it, the rule; the check above stays the authority.
checked_string!(
    /// Any text without NUL characters.
    Text, "a string", check_text,
    schemars::json_schema!({"type": "string"}));
checked_string!(
    /// Text with at least one non-space character.
    NonEmptyText, "a non-empty string", check_non_empty,
    schemars::json_schema!({"type": "string", "pattern": "\\S"}));
checked_string!(
    /// A Docker image reference.
    ImageRef, "an image like `runner/base:bookworm`", check_image,
    schemars::json_schema!({"type": "string", "pattern": "^[^-\\s]\\S*$"}));
checked_string!(
    /// A job name or group: `[a-z0-9][a-z0-9-]{0,62}`.
    Name, "a name like `add-greeting`", check_name,
    schemars::json_schema!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}));
checked_string!(
    /// An environment variable or secret name.
    EnvName, "a variable name like `RUST_LOG`", check_env_name,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,254}$"}));
checked_string!(
    /// An `http://` or `https://` URL.
    HttpUrl, "a URL like `https://api.example.com/v1`", check_http_url,
    schemars::json_schema!({"type": "string", "pattern": "^https?://\\S+$"}));
checked_string!(
/// A branch, tag or commit name.
GitRef, "a git ref like `main`", check_git_ref,
schemars::json_schema!({
    "type": "string",
    "pattern": "^(?!-|/)(?!.*(\\.\\.|@\\{|[~^:?*\\[\\\\\\s]))(?!.*(/|\\.|\\.lock)$).+$"
}));

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_agent_error as assert_error, ok, one_error, AGENT};

    #[test]
    fn names_follow_the_dns_like_rule() {
        let (at, msg) = one_error("name: Demo_1\ntask: x\n");
        assert_eq!(at, Some((1, 7)));
        assert!(
            msg.starts_with("name: `Demo_1` is not a valid name"),
            "{msg}"
        );
        assert!(msg.contains("like `add-greeting`"), "{msg}");
        assert_error(
            &format!("group: {}\n", "a".repeat(64)),
            (3, 8),
            "group: `aaaa",
        );
        assert_error(
            "group: -lead\n",
            (3, 8),
            "group: `-lead` is not a valid name",
        );
        assert_eq!(
            ok(&format!("{AGENT}group: {}\n", "a".repeat(63)))
                .group
                .len(),
            63
        );
        assert_eq!(ok("name: 0-a-9\ntask: x\n").name, "0-a-9");
    }

    #[test]
    fn strings_with_nul_are_refused() {
        assert_error(
            "image: \"a\\0b\"\n",
            (3, 8),
            "image: contains a NUL character",
        );
        assert_error(
            "ref: \"\"\n",
            (3, 6),
            "ref: `` is not a valid git ref (it is empty)",
        );
    }

    #[test]
    fn images_are_plain_references() {
        assert_error(
            "image: 'a b'\n",
            (3, 8),
            "image: `a b` is not a valid image reference",
        );
        assert_error(
            "image: --privileged\n",
            (3, 8),
            "image: `--privileged` is not a valid",
        );
        assert_eq!(
            ok(&format!("{AGENT}image: localhost:5000/x/y:1.0\n")).image,
            "localhost:5000/x/y:1.0"
        );
    }

    #[test]
    fn empty_required_text_is_refused() {
        assert_error("image: \"  \"\n", (3, 8), "image: is empty");
        assert_error("agent: { model: '' }\n", (3, 17), "agent.model: is empty");
    }

    #[test]
    fn git_refs_and_branches_are_ref_name_safe() {
        assert_error(
            "ref: a b\n",
            (3, 6),
            "ref: `a b` is not a valid git ref (it contains a space",
        );
        assert_error(
            "ref: -x\n",
            (3, 6),
            "ref: `-x` is not a valid git ref (it starts with `-`)",
        );
        assert_error(
            "ref: a..b\n",
            (3, 6),
            "ref: `a..b` is not a valid git ref (it contains `..`)",
        );
        assert_error(
            "ref: HEAD~1\n",
            (3, 6),
            "ref: `HEAD~1` is not a valid git ref (it contains one of",
        );
        assert_error(
            "output: { branch: 'x:y' }\n",
            (3, 19),
            "output.branch: `x:y` is not a valid git ref",
        );
        assert_error(
            "output: { branch: 'x.lock' }\n",
            (3, 19),
            "output.branch: `x.lock` is not a valid git ref",
        );
        let spec = ok(&format!(
            "{AGENT}ref: v1.2.3\nrepo: https://github.com/org/app.git\noutput: {{ mode: pr, branch: runner/fix-1 }}\n"
        ));
        assert_eq!(spec.git_ref.as_deref(), Some("v1.2.3"));
        assert_eq!(spec.output.branch.as_deref(), Some("runner/fix-1"));
    }

    #[test]
    fn llm_urls_and_key_names_are_checked() {
        assert_error(
            "llm: { base_url: ftp://x }\n",
            (3, 18),
            "llm.base_url: `ftp://x` is not an http(s) URL",
        );
        assert_error(
            "llm: { api_key_env: 1KEY }\n",
            (3, 21),
            "llm.api_key_env: `1KEY` is not a valid variable name",
        );
    }

    #[test]
    fn enums_list_their_values() {
        assert_error(
            "network: host\n",
            (3, 10),
            "network: unknown variant `host`, expected one of `none`, `llm`, `bridge`",
        );
        assert_error(
            "output: { mode: zip }\n",
            (3, 17),
            "output.mode: unknown variant `zip`, expected one of `patch`, `branch`, `pr`",
        );
        assert_error(
            "manager: { mode: auto }\n",
            (3, 18),
            "manager.mode: unknown variant `auto`, expected one of `llm`, `script`, `none`",
        );
    }
}
