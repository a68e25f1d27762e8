//! Commands in a job file (`command`, `verify`): a list of strings run as argv, or one string run
//! as `sh -c STRING`. Written without `untagged` so a wrong shape gets an error that names both
//! accepted forms, and each element is checked where it is written.

use super::text::check_text;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use std::fmt;

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
            return Err(E::custom(format!(
                "the command is empty: write one, {ARGV_EXAMPLE}"
            )));
        }
        Ok(Argv(vec!["sh".into(), "-c".into(), v.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Argv, A::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element_seed(ArgSeed {
            first: argv.is_empty(),
        })? {
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

/// `runner schema`: one string (run by `sh -c`), or a list whose first element is not empty.
/// YAML scalars in the list are read as their text (`[sleep, 1]`).
impl schemars::JsonSchema for Argv {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Argv".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "prefixItems": [{"anyOf": [{"type": "string", "minLength": 1}, {"type": ["number", "boolean"]}]}],
                    "items": {"type": ["string", "number", "boolean"]}
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::JobKind;
    use super::super::testutil::{ok, one_error, AGENT};

    #[test]
    fn a_command_list_is_argv() {
        let spec = ok("name: x\nimage: i\ncommand: [sleep, 5]\n");
        assert_eq!(
            spec.kind,
            JobKind::Command {
                command: vec!["sleep".into(), "5".into()]
            }
        );
    }

    #[test]
    fn a_command_string_runs_in_a_shell() {
        let spec = ok("name: x\nimage: i\ncommand: make test && echo ok\n");
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        assert_eq!(
            spec.kind,
            JobKind::Command {
                command: sh("make test && echo ok")
            }
        );
        let agent = ok("name: x\ntask: t\nverify: pytest -q\n");
        assert_eq!(agent.verify, Some(sh("pytest -q")));
    }

    #[test]
    fn empty_commands_are_refused() {
        let (at, msg) = one_error("name: x\nimage: i\ncommand: []\n");
        assert_eq!(at, Some((3, 10)));
        assert!(
            msg.starts_with(
                "command: the command is empty: write one, like `[\"make\", \"test\"]`"
            ),
            "{msg}"
        );
        let (at, msg) = one_error("name: x\nimage: i\ncommand: \"  \"\n");
        assert_eq!(at, Some((3, 10)));
        assert!(msg.starts_with("command: the command is empty"), "{msg}");
        let (at, msg) = one_error(&format!("{AGENT}verify: []\n"));
        assert_eq!(at, Some((3, 9)));
        assert!(msg.starts_with("verify: the command is empty"), "{msg}");
    }

    #[test]
    fn the_program_name_must_not_be_empty() {
        let (at, msg) = one_error("name: x\nimage: i\ncommand:\n  - ''\n  - x\n");
        assert_eq!(at, Some((4, 5)));
        assert!(
            msg.starts_with("command[0]: the program name (first element) is empty"),
            "{msg}"
        );
        let spec = ok("name: x\nimage: i\ncommand: [echo, '']\n");
        assert_eq!(
            spec.kind,
            JobKind::Command {
                command: vec!["echo".into(), String::new()]
            }
        );
    }

    #[test]
    fn a_command_of_the_wrong_shape_says_both_forms() {
        let (at, msg) = one_error("name: x\nimage: i\ncommand: { run: make }\n");
        assert_eq!(at, Some((3, 10)));
        assert!(
            msg.contains("expected a list of strings or one shell command"),
            "{msg}"
        );
        let (at, msg) = one_error("name: x\nimage: i\ncommand: [make, [test]]\n");
        assert_eq!(at, Some((3, 17)));
        assert!(
            msg.starts_with("command[1]: invalid type: sequence"),
            "{msg}"
        );
    }
}
