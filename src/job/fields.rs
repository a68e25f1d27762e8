//! Single values of a job file that check themselves while being deserialized: names, git refs,
//! variable names, bounded numbers, sizes and durations.
//!
//! The checks run inside `Visitor` methods on purpose: serde_yaml attaches the value's line and
//! column (and its dotted path, e.g. `resources.pids`) only to errors raised there.

use super::spec::ByteSize;
use super::units::{format_duration, parse_duration, parse_size};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

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
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(())
        }
        _ => Err(format!(
            "`{}` is not an http(s) URL: write one like `https://api.example.com/v1`",
            s.escape_debug()
        )),
    }
}

/// Declares a string newtype whose `Deserialize` runs `$check` on the value.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $expecting:literal, $check:path) => {
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
    };
}

checked_string!(
    /// Any text without NUL characters.
    Text, "a string", check_text);
checked_string!(
    /// Text with at least one non-space character.
    NonEmptyText, "a non-empty string", check_non_empty);
checked_string!(
    /// A job name or group: `[a-z0-9][a-z0-9-]{0,62}`.
    Name, "a name like `add-greeting`", check_name);
checked_string!(
    /// An environment variable or secret name.
    EnvName, "a variable name like `RUST_LOG`", check_env_name);
checked_string!(
    /// An `http://` or `https://` URL.
    HttpUrl, "a URL like `https://api.example.com/v1`", check_http_url);
checked_string!(
    /// A branch, tag or commit name.
    GitRef, "a git ref like `main`", check_git_ref);

/// Declares an integer newtype that accepts only `$min..=$max`.
macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $min:expr, $max:expr, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl V {
                    fn check<E: de::Error>(v: i128) -> Result<$name, E> {
                        if v < 0 {
                            return Err(E::custom(format!("{v} is negative: use {}", $expecting)));
                        }
                        if v < i128::from($min) || v > i128::from($max) {
                            return Err(E::custom(format!("{v} is out of range: use {}", $expecting)));
                        }
                        Ok($name(v as $ty))
                    }
                }
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        V::check(i128::from(v))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        V::check(i128::from(v))
                    }
                    fn visit_i128<E: de::Error>(self, v: i128) -> Result<$name, E> {
                        V::check(v)
                    }
                    fn visit_u128<E: de::Error>(self, v: u128) -> Result<$name, E> {
                        V::check(i128::try_from(v).unwrap_or(i128::MAX))
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$name, E> {
                        Err(E::custom(format!("{v} is not a whole number: use {}", $expecting)))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

bounded_int!(
    /// `resources.pids`.
    Pids, u32, 16u32, 1_000_000u32, "a whole number from 16 to 1000000, like `512`");
bounded_int!(
    /// `retries` (infrastructure failures only).
    Retries, u32, 0u32, 10u32, "a whole number from 0 to 10, like `1`");
bounded_int!(
    /// `manager.max_turns`.
    MaxTurns, u32, 1u32, 1000u32, "a whole number from 1 to 1000, like `30`");
bounded_int!(
    /// `budget.tokens`.
    Tokens, u64, 1u64, u64::MAX, "a whole number of tokens above 0, like `400000`");

/// Declares a float newtype accepting finite values in `(0, $max]`.
macro_rules! positive_float {
    ($(#[$doc:meta])* $name:ident, $max:expr, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub(crate) struct $name(pub f64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$name, E> {
                        if v.is_finite() && v > 0.0 && v <= $max {
                            return Ok($name(v));
                        }
                        let why = if v.is_nan() || v.is_infinite() {
                            "is not a finite number"
                        } else if v < 0.0 {
                            "is negative"
                        } else {
                            "is out of range"
                        };
                        Err(E::custom(format!("{v} {why}: use {}", $expecting)))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        self.visit_f64(v as f64)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        self.visit_f64(v as f64)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

positive_float!(
    /// `resources.cpus`, in cores.
    Cpus, 256.0, "a number of cores above 0 and at most 256, like `1.5`");
positive_float!(
    /// `budget.usd`.
    Usd, f64::MAX, "an amount in US dollars above 0, like `2.00`");

const MIN_MEMORY: u64 = 6 << 20;
const MAX_MEMORY: u64 = 1 << 40;

/// `resources.memory`: from 6m (Docker's minimum) to 1t.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Memory(pub ByteSize);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size from 6m to 1t, like `2g`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                let size = parse_size(v).map_err(E::custom)?;
                self.visit_u64(size.0)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                if (MIN_MEMORY..=MAX_MEMORY).contains(&v) {
                    return Ok(Memory(ByteSize(v)));
                }
                Err(E::custom(format!(
                    "{} is out of range: use a size from 6m to 1t, like `2g`",
                    ByteSize(v)
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                Err(E::custom(format!("{v} is negative: use a size from 6m to 1t, like `2g`")))
            }
        }
        d.deserialize_any(V)
    }
}

const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// `timeout`: from 1s to 7d; a bare integer is seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn check<E: de::Error>(d: Duration) -> Result<Timeout, E> {
                if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d) {
                    return Ok(Timeout(d));
                }
                Err(E::custom(format!(
                    "{} is out of range: use a duration from 1s to 7d, like `30m`",
                    format_duration(d)
                )))
            }
        }
        impl Visitor<'_> for V {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration from 1s to 7d, like `30m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timeout, E> {
                V::check(parse_duration(v).map_err(E::custom)?)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timeout, E> {
                V::check(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timeout, E> {
                Err(E::custom(format!("{v} is negative: use a duration from 1s to 7d, like `30m`")))
            }
        }
        d.deserialize_any(V)
    }
}
