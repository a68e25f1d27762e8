//! Collections in a job file that check themselves while being deserialized: commands (`command`,
//! `verify`), `env` and `secrets`.
//!
//! Each element is checked through a `DeserializeSeed` so that an error (a bad name, a duplicate,
//! one entry too many) carries the line and column of the element itself, not of the collection.

use super::fields::{check_env_name, check_text};
use super::spec::EnvVars;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Most variables in `env`.
pub(crate) const MAX_ENV_VARS: usize = 256;
/// Longest value of one variable in `env`, in bytes.
pub(crate) const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Most names in `secrets`.
pub(crate) const MAX_SECRETS: usize = 64;

/// A command: a list of strings run as argv, or one string run as `sh -c STRING`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Argv(pub Vec<String>);

const ARGV_EXAMPLE: &str = "like `[\"make\", \"test\"]` or `\"make test\"`";

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgvVisitor)
    }
}

struct ArgvVisitor;

impl<'de> Visitor<'de> for ArgvVisitor {
    type Value = Argv;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of strings or one shell command, {ARGV_EXAMPLE}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Argv, E> {
        check_text(v).map_err(E::custom)?;
        if v.trim().is_empty() {
            return Err(E::custom(format!("the command is empty: write one, {ARGV_EXAMPLE}")));
        }
        Ok(Argv(vec!["sh".into(), "-c".into(), v.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Argv, A::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element_seed(ArgSeed { first: argv.is_empty() })? {
            argv.push(arg);
        }
        if argv.is_empty() {
            return Err(de::Error::custom(format!(
                "the command is empty: write one, {ARGV_EXAMPLE}"
            )));
        }
        Ok(Argv(argv))
    }
}

/// One argv element; the first (the program) must not be empty.
struct ArgSeed {
    first: bool,
}

impl<'de> DeserializeSeed<'de> for ArgSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for ArgSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string (one argument)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        check_text(v).map_err(E::custom)?;
        if self.first && v.trim().is_empty() {
            return Err(E::custom(format!(
                "the program name (first element) is empty: name a program, {ARGV_EXAMPLE}"
            )));
        }
        Ok(v.to_owned())
    }
}

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
        while let Some(key) = map.next_key_seed(NameSeed { seen: &vars, what: "env", max: MAX_ENV_VARS })? {
            let value = map.next_value_seed(EnvValueSeed)?;
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
struct NameSeed<'a, T> {
    seen: &'a T,
    what: &'static str,
    max: usize,
}

/// What `NameSeed` needs to know about the names read so far.
trait Names {
    fn count(&self) -> usize;
    fn has(&self, name: &str) -> bool;
}

impl Names for BTreeMap<String, String> {
    fn count(&self) -> usize {
        self.len()
    }
    fn has(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

impl Names for BTreeSet<String> {
    fn count(&self) -> usize {
        self.len()
    }
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl<'de, T: Names> DeserializeSeed<'de> for NameSeed<'_, T> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<T: Names> Visitor<'_> for NameSeed<'_, T> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a variable name like `RUST_LOG`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.seen.count() >= self.max {
            return Err(E::custom(format!(
                "more than {} entries in `{}`: keep at most {}",
                self.max, self.what, self.max
            )));
        }
        check_env_name(v).map_err(E::custom)?;
        if self.seen.has(v) {
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
        while let Some(name) = seq.next_element_seed(NameSeed { seen: &seen, what: "secrets", max: MAX_SECRETS })? {
            seen.insert(name.clone());
            names.push(name);
        }
        Ok(Secrets(names))
    }
}
