//! The `verify` step: the job's check command, run inside the sandbox after the agent finished.
//! A failing check is a result (`passed: false`), not an error; errors are for a sandbox that
//! could not run it at all.

use super::ResultError;
use crate::sandbox::Sandbox;

/// What the check printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyResult {
    /// True when the command exited with code 0.
    pub passed: bool,
    pub code: i64,
    /// Stdout and stderr interleaved, at most the requested limit (then a note that it was cut).
    pub output: String,
}

/// Runs `argv` in `container` (as the sandbox user, in /workspace) and keeps at most `limit`
/// bytes of its output.
pub async fn verify<S: Sandbox>(
    sandbox: &S,
    container: &str,
    argv: &[String],
    limit: usize,
) -> Result<VerifyResult, ResultError> {
    match argv.first() {
        Some(program) if !program.is_empty() => {}
        _ => return Err(ResultError::EmptyVerify),
    }
    let ran = sandbox.exec(container, argv, None, limit).await?;
    let mut output = String::from_utf8_lossy(&ran.output).into_owned();
    if ran.truncated {
        output.push_str(&format!("\n[output cut at {limit} bytes]\n"));
    }
    Ok(VerifyResult {
        passed: ran.code == 0,
        code: ran.code,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::HostShell;
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[tokio::test]
    async fn the_exit_code_decides_and_both_streams_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = HostShell::new(tmp.path());
        let pass = verify(&sandbox, "c", &argv(&["sh", "-c", "echo ok"]), 100)
            .await
            .unwrap();
        assert_eq!(
            pass,
            VerifyResult {
                passed: true,
                code: 0,
                output: "ok\n".into()
            }
        );
        let fail = verify(
            &sandbox,
            "c",
            &argv(&["sh", "-c", "echo 1 failed >&2; exit 2"]),
            100,
        )
        .await
        .unwrap();
        assert_eq!((fail.passed, fail.code), (false, 2));
        assert_eq!(fail.output, "1 failed\n");
    }

    #[tokio::test]
    async fn cut_output_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = HostShell::new(tmp.path());
        let got = verify(&sandbox, "c", &argv(&["printf", "abcdef"]), 4)
            .await
            .unwrap();
        assert_eq!(got.output, "abcd\n[output cut at 4 bytes]\n");
        assert!(got.passed);
    }

    #[tokio::test]
    async fn an_empty_command_is_refused_without_running() {
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = HostShell::new(tmp.path());
        for check in [vec![], argv(&[""])] {
            let err = verify(&sandbox, "c", &check, 10).await.unwrap_err();
            assert!(matches!(err, ResultError::EmptyVerify), "{err}");
        }
        assert_eq!(sandbox.exec_count(), 0);
    }
}
