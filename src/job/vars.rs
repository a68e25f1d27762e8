//! Variables in a job file: `env` (names to values) and `secrets` (names of host variables).
//!
//! Each name is checked through a `DeserializeSeed` so that an error (a bad name, a duplicate,
//! one entry too many) carries the line and column of that entry, not of the whole collection.

use super::spec::EnvVars;
use super::text::{check_env_name, check_text};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Most variables in `env`.
pub(crate) const MAX_ENV_VARS: usize = 256;
/// Longest value of one variable in `env`, in bytes.
pub(crate) const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Most names in `secrets`.
pub(crate) const MAX_SECRETS: usize = 64;

/// `env`: variable names to values, at most [`MAX_ENV_VARS`], no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Env(pub EnvVars);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvVisitor)
    }
}

struct EnvVisitor;

impl<'de> Visitor<'de> for EnvVisitor {
    type Value = Env;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of variable names to values, like `{ RUST_LOG: info }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Env, A::Error> {
        let mut vars = BTreeMap::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key_seed(NameSeed {
            seen: &seen,
            what: "env",
            max: MAX_ENV_VARS,
        })? {
            let value = map.next_value_seed(EnvValueSeed)?;
            seen.insert(key.clone());
            vars.insert(key, value);
        }
        Ok(Env(EnvVars(vars)))
    }
}

struct EnvValueSeed;

impl<'de> DeserializeSeed<'de> for EnvValueSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for EnvValueSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        check_text(v).map_err(E::custom)?;
        if v.len() > MAX_ENV_VALUE_BYTES {
            return Err(E::custom(format!(
                "value is {} bytes, more than the {MAX_ENV_VALUE_BYTES}-byte limit: \
                 put large data in the repository instead",
                v.len()
            )));
        }
        Ok(v.to_owned())
    }
}

/// A variable name that is new in `seen`, and not one too many.
struct NameSeed<'a> {
    seen: &'a BTreeSet<String>,
    what: &'static str,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for NameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a variable name like `RUST_LOG`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.seen.len() >= self.max {
            return Err(E::custom(format!(
                "more than {} entries in `{}`: keep at most {}",
                self.max, self.what, self.max
            )));
        }
        check_env_name(v).map_err(E::custom)?;
        if self.seen.contains(v) {
            return Err(E::custom(format!(
                "`{v}` appears twice in `{}`: keep one",
                self.what
            )));
        }
        Ok(v.to_owned())
    }
}

/// `secrets`: names of host variables, at most [`MAX_SECRETS`], no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Secrets(pub Vec<String>);

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(SecretsVisitor)
    }
}

struct SecretsVisitor;

impl<'de> Visitor<'de> for SecretsVisitor {
    type Value = Secrets;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of host variable names, like `[GITHUB_TOKEN]`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Secrets, A::Error> {
        let mut names = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(name) = seq.next_element_seed(NameSeed {
            seen: &seen,
            what: "secrets",
            max: MAX_SECRETS,
        })? {
            seen.insert(name.clone());
            names.push(name);
        }
        Ok(Secrets(names))
    }
}

/// `runner schema` for `env`: names as the variable rule says, scalar values (read as text).
impl schemars::JsonSchema for Env {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Env".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "maxProperties": MAX_ENV_VARS,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,254}$"},
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]}
        })
    }
}

/// `runner schema` for `secrets`: distinct variable names.
impl schemars::JsonSchema for Secrets {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secrets".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "maxItems": MAX_SECRETS,
            "uniqueItems": true,
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,254}$"}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ok, one_error, AGENT, COMMAND};
    use super::*;

    #[test]
    fn env_values_are_strings() {
        let spec = ok(&format!(
            "{AGENT}env: {{ RUST_LOG: info, N: 3, ON: true, _X1: '' }}\n"
        ));
        let env = &spec.env.0;
        assert_eq!(env["N"], "3");
        assert_eq!(env["ON"], "true");
        assert_eq!(env["_X1"], "");
        assert_eq!(
            format!("{:?}", spec.env),
            r#"{"N": "<hidden>", "ON": "<hidden>", "RUST_LOG": "<hidden>", "_X1": "<hidden>"}"#
        );
    }

    #[test]
    fn env_names_are_checked_at_the_key() {
        let (at, msg) = one_error(&format!("{AGENT}env:\n  GOOD: 1\n  9BAD: 2\n"));
        assert_eq!(at, Some((5, 3)));
        assert!(
            msg.starts_with("env: `9BAD` is not a valid variable name"),
            "{msg}"
        );
        let (at, msg) = one_error(&format!("{AGENT}env: {{ A-B: 1 }}\n"));
        assert_eq!(at, Some((3, 8)));
        assert!(msg.contains("`A-B` is not a valid variable name"), "{msg}");
    }

    #[test]
    fn duplicate_env_names_point_at_the_second() {
        let (at, msg) = one_error(&format!("{AGENT}env:\n  A: 1\n  A: 2\n"));
        assert_eq!(at, Some((5, 3)));
        assert!(
            msg.starts_with("env: `A` appears twice in `env`: keep one"),
            "{msg}"
        );
    }

    #[test]
    fn env_is_limited_in_count_and_value_size() {
        let vars: String = (0..=MAX_ENV_VARS).map(|i| format!("  V{i}: x\n")).collect();
        let (at, msg) = one_error(&format!("{AGENT}env:\n{vars}"));
        assert_eq!(at, Some((4 + MAX_ENV_VARS, 3)));
        assert!(
            msg.starts_with("env: more than 256 entries in `env`: keep at most 256"),
            "{msg}"
        );
        let big = "x".repeat(MAX_ENV_VALUE_BYTES + 1);
        let (at, msg) = one_error(&format!("{AGENT}env:\n  BIG: {big}\n"));
        assert_eq!(at, Some((4, 8)));
        assert!(
            msg.starts_with("env.BIG: value is 32769 bytes, more than the 32768-byte limit"),
            "{msg}"
        );
        let (at, msg) = one_error(&format!("{AGENT}env:\n  NUL: \"a\\0\"\n"));
        assert_eq!(at, Some((4, 8)));
        assert!(
            msg.starts_with("env.NUL: contains a NUL character"),
            "{msg}"
        );
        let fits = "x".repeat(MAX_ENV_VALUE_BYTES);
        assert_eq!(
            ok(&format!("{AGENT}env:\n  BIG: {fits}\n")).env.0["BIG"].len(),
            MAX_ENV_VALUE_BYTES
        );
    }

    #[test]
    fn secrets_are_unique_valid_names() {
        let spec = ok(&format!("{COMMAND}secrets: [GITHUB_TOKEN, NPM_TOKEN]\n"));
        assert_eq!(spec.secrets, ["GITHUB_TOKEN", "NPM_TOKEN"]);
        let (at, msg) = one_error(&format!("{COMMAND}secrets: [A, B, A]\n"));
        assert_eq!(at, Some((4, 17)));
        assert!(
            msg.starts_with("secrets[2]: `A` appears twice in `secrets`: keep one"),
            "{msg}"
        );
        let (at, msg) = one_error(&format!("{COMMAND}secrets:\n  - GOOD\n  - $BAD\n"));
        assert_eq!(at, Some((6, 5)));
        assert!(msg.contains("`$BAD` is not a valid variable name"), "{msg}");
    }

    #[test]
    fn secrets_are_limited_in_count() {
        let names: Vec<String> = (0..=MAX_SECRETS).map(|i| format!("S{i}")).collect();
        let (at, msg) = one_error(&format!("{COMMAND}secrets: [{}]\n", names.join(", ")));
        assert!(at.is_some_and(|(line, _)| line == 4), "{at:?}");
        assert!(
            msg.contains("more than 64 entries in `secrets`: keep at most 64"),
            "{msg}"
        );
    }
}
