//! Numbers, sizes and durations of a job file that check their range while being deserialized
//! (`resources`, `timeout`, `retries`, `manager.max_turns`, `manager.max_tokens`,
//! `manager.call_timeout`, `budget`).
//!
//! The checks run inside `Visitor` methods on purpose: serde_yaml attaches the value's line and
//! column (and its dotted path, e.g. `resources.pids`) only to errors raised there. Negative
//! numbers get their own message rather than wrapping or a bare type error.

use super::spec::ByteSize;
use super::units::{format_duration, parse_duration, parse_size};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

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

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "integer", "minimum": $min, "maximum": $max})
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
    /// `candidates` (best-of-N: attempts of an agent job run side by side).
    Candidates, u32, 1u32, 8u32, "a whole number from 1 to 8, like `3`");
bounded_int!(
    /// `manager.max_turns`.
    MaxTurns, u32, 1u32, 1000u32, "a whole number from 1 to 1000, like `30`");
bounded_int!(
    /// `manager.max_tokens`: the most output one manager answer may have.
    ManagerTokens, u32, 16u32, 100_000u32, "a whole number of tokens from 16 to 100000, like `1000`");
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

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = schemars::json_schema!({"type": "number", "exclusiveMinimum": 0});
                if $max < f64::MAX {
                    schema.insert("maximum".into(), $max.into());
                }
                schema
            }
        }
    };
}

positive_float!(
    /// `resources.cpus`, in cores.
    Cpus, 256.0, "a number of cores above 0 and at most 256, like `1.5`");
positive_float!(
    /// `resources.cpu_request`, in cores.
    CpuRequest, 256.0, "a number of cores above 0 and at most `resources.cpus`, like `0.5`");
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
                Err(E::custom(format!(
                    "{v} is negative: use a size from 6m to 1t, like `2g`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// Declares a duration newtype that accepts only `$min..=$max` (`$range` says so in words); a
/// bare integer is seconds.
macro_rules! bounded_duration {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $range:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct $name(pub Duration);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl V {
                    fn check<E: de::Error>(d: Duration) -> Result<$name, E> {
                        if ($min..=$max).contains(&d) {
                            return Ok($name(d));
                        }
                        Err(E::custom(format!(
                            "{} is out of range: use {}",
                            format_duration(d),
                            $range
                        )))
                    }
                }
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($range)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        V::check(parse_duration(v).map_err(E::custom)?)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        V::check(Duration::from_secs(v))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        Err(E::custom(format!("{v} is negative: use {}", $range)))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

bounded_duration!(
    /// `timeout`: from 1s to 7d; a bare integer is seconds.
    Timeout,
    MIN_TIMEOUT,
    MAX_TIMEOUT,
    "a duration from 1s to 7d, like `30m`"
);

const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);

bounded_duration!(
    /// `manager.call_timeout`: from 1s to 1h; a bare integer is seconds.
    CallTimeout,
    MIN_TIMEOUT,
    MAX_CALL_TIMEOUT,
    "a duration from 1s to 1h, like `2m`"
);

/// A duration as the job file writes it: whole seconds, or numbers with units from largest to
/// smallest (`90s`, `1h30m`, `1s500ms`; units in any case).
const DURATION_PATTERN: &str = "^\\s*([0-9]+|([0-9]+([dD]|[hH]|[mM][sS]|[mM]|[sS]))+)\\s*$";
/// A size as the job file writes it: bytes, or a number with a binary unit (`512m`, `1.5g`).
const SIZE_PATTERN: &str = "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]([iI]?[bB])?|[bB])?\\s*$";

/// The schema of a size or duration field: a string in its syntax, or a bare integer in range.
fn unit_schema(pattern: &str, min: u64, max: u64) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"],
        "pattern": pattern,
        "minimum": min,
        "maximum": max,
    })
}

macro_rules! unit_schema {
    ($name:ident, $pattern:expr, $min:expr, $max:expr) => {
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                unit_schema($pattern, $min, $max)
            }
        }
    };
}

unit_schema!(Memory, SIZE_PATTERN, MIN_MEMORY, MAX_MEMORY);
unit_schema!(
    Timeout,
    DURATION_PATTERN,
    MIN_TIMEOUT.as_secs(),
    MAX_TIMEOUT.as_secs()
);
unit_schema!(
    CallTimeout,
    DURATION_PATTERN,
    MIN_TIMEOUT.as_secs(),
    MAX_CALL_TIMEOUT.as_secs()
);

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_agent_error as assert_error, ok, AGENT};

    #[test]
    fn cpus_must_be_positive_and_at_most_256() {
        assert_error(
            "resources:\n  cpus: 0\n",
            (4, 9),
            "resources.cpus: 0 is out of range",
        );
        assert_error(
            "resources:\n  cpus: -1.5\n",
            (4, 9),
            "resources.cpus: -1.5 is negative",
        );
        assert_error(
            "resources:\n  cpus: 256.5\n",
            (4, 9),
            "resources.cpus: 256.5 is out of range",
        );
        assert_error(
            "resources:\n  cpus: .nan\n",
            (4, 9),
            "resources.cpus: NaN is not a finite number",
        );
        assert_error(
            "resources:\n  cpus: lots\n",
            (4, 9),
            "resources.cpus: invalid type",
        );
        assert_eq!(
            ok(&format!("{AGENT}resources: {{ cpus: 256 }}\n"))
                .resources
                .cpus,
            256.0
        );
    }

    #[test]
    fn memory_is_between_6m_and_1t() {
        assert_error(
            "resources: { memory: 5m }\n",
            (3, 22),
            "resources.memory: 5m is out of range: use a size from 6m to 1t",
        );
        assert_error(
            "resources: { memory: 2t }\n",
            (3, 22),
            "resources.memory: 2t is out of range",
        );
        assert_error(
            "resources: { memory: -1 }\n",
            (3, 22),
            "resources.memory: -1 is negative",
        );
        assert_error(
            "resources: { memory: -1g }\n",
            (3, 22),
            "resources.memory: size `-1g` is negative",
        );
        assert_error(
            "resources: { memory: 2 gigs }\n",
            (3, 22),
            "resources.memory: invalid size",
        );
        let spec = ok(&format!("{AGENT}resources: {{ memory: 6m }}\n"));
        assert_eq!(spec.resources.memory.0, 6 << 20);
        assert_eq!(
            ok(&format!("{AGENT}resources: {{ memory: 1t }}\n"))
                .resources
                .memory
                .0,
            1 << 40
        );
        assert_eq!(
            ok(&format!("{AGENT}resources: {{ memory: 8388608 }}\n"))
                .resources
                .memory
                .0,
            8 << 20
        );
    }

    #[test]
    fn pids_are_between_16_and_a_million() {
        assert_error(
            "resources: { pids: 15 }\n",
            (3, 20),
            "resources.pids: 15 is out of range: use a whole number from 16 to 1000000",
        );
        assert_error(
            "resources: { pids: 1000001 }\n",
            (3, 20),
            "resources.pids: 1000001 is out of range",
        );
        assert_error(
            "resources: { pids: -1 }\n",
            (3, 20),
            "resources.pids: -1 is negative",
        );
        assert_error(
            "resources: { pids: 1.5 }\n",
            (3, 20),
            "resources.pids: 1.5 is not a whole number",
        );
        assert_error(
            "resources: { pids: 99999999999999999999 }\n",
            (3, 20),
            "resources.pids: 99999999999999999999 is out of range",
        );
        assert_eq!(
            ok(&format!("{AGENT}resources: {{ pids: 16 }}\n"))
                .resources
                .pids,
            16
        );
        assert_eq!(
            ok(&format!("{AGENT}resources: {{ pids: 1000000 }}\n"))
                .resources
                .pids,
            1_000_000
        );
    }

    #[test]
    fn timeout_is_between_1s_and_7d() {
        assert_error(
            "timeout: 0s\n",
            (3, 10),
            "timeout: 0s is out of range: use a duration from 1s to 7d",
        );
        assert_error(
            "timeout: 500ms\n",
            (3, 10),
            "timeout: 500ms is out of range",
        );
        assert_error("timeout: 8d\n", (3, 10), "timeout: 8d is out of range");
        assert_error("timeout: -5\n", (3, 10), "timeout: -5 is negative");
        assert_error(
            "timeout: -5m\n",
            (3, 10),
            "timeout: duration `-5m` is negative",
        );
        assert_error(
            "timeout: soon\n",
            (3, 10),
            "timeout: invalid duration `soon`",
        );
        assert_eq!(ok(&format!("{AGENT}timeout: 1s\n")).timeout.as_secs(), 1);
        assert_eq!(
            ok(&format!("{AGENT}timeout: 7d\n")).timeout.as_secs(),
            7 * 86_400
        );
        assert_eq!(ok(&format!("{AGENT}timeout: 90\n")).timeout.as_secs(), 90);
    }

    #[test]
    fn retries_and_max_turns_are_bounded() {
        assert_error(
            "retries: 11\n",
            (3, 10),
            "retries: 11 is out of range: use a whole number from 0 to 10",
        );
        assert_error("retries: -1\n", (3, 10), "retries: -1 is negative");
        assert_error(
            "manager: { max_turns: 0 }\n",
            (3, 23),
            "manager.max_turns: 0 is out of range",
        );
        assert_error(
            "manager: { max_turns: 1001 }\n",
            (3, 23),
            "manager.max_turns: 1001 is out of range",
        );
        assert_eq!(ok(&format!("{AGENT}retries: 10\n")).retries, 10);
        assert_eq!(
            ok(&format!("{AGENT}manager: {{ max_turns: 1000 }}\n"))
                .manager
                .max_turns,
            1000
        );
    }

    #[test]
    fn budgets_are_positive_and_finite() {
        assert_error(
            "budget: { tokens: 0 }\n",
            (3, 19),
            "budget.tokens: 0 is out of range",
        );
        assert_error(
            "budget: { tokens: -5 }\n",
            (3, 19),
            "budget.tokens: -5 is negative",
        );
        assert_error(
            "budget: { usd: 0 }\n",
            (3, 16),
            "budget.usd: 0 is out of range",
        );
        assert_error(
            "budget: { usd: -2.5 }\n",
            (3, 16),
            "budget.usd: -2.5 is negative",
        );
        assert_error(
            "budget: { usd: .inf }\n",
            (3, 16),
            "budget.usd: inf is not a finite number",
        );
        let budget = ok(&format!("{AGENT}budget: {{ tokens: 1, usd: 0.01 }}\n")).budget;
        assert_eq!((budget.tokens, budget.usd), (Some(1), Some(0.01)));
    }
}
