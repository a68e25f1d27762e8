//! Exporting the work from the sandbox, through `exec` only: a patch of everything since the
//! base commit, and a git bundle of the same commits.
//!
//! The patch is `git format-patch` output for the commits since the base, followed by one more
//! message holding whatever the work tree changed beyond the last commit (tracked and untracked
//! files, not Aider's own `.aider*` files), so that `git am` on the base reproduces the final
//! tree exactly. That last message comes from a commit object made with `git commit-tree` over a
//! scratch index: the container's HEAD, branch and index are left as they were. The bundle
//! holds the patch's commits, that last one included, with the last as its `HEAD`, so a branch
//! pushed from it carries the whole result.

use super::ResultError;
use crate::sandbox::Sandbox;
use std::path::{Path, PathBuf};

/// Largest patch or bundle exported (256 MiB each).
pub const MAX_RESULT_BYTES: usize = 256 << 20;

/// Most output kept from the small bookkeeping commands.
const SMALL_OUTPUT: usize = 64 << 10;

/// Git options for every command run in the container: no hooks, no fsmonitor program, no
/// signing prompts, and patches in the standard `a/` `b/` form whatever the repository's config
/// (which the job can write) says.
const GIT: [&str; 17] = [
    "git",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "diff.srcPrefix=a/",
    "-c",
    "diff.dstPrefix=b/",
    "-c",
    "diff.relative=false",
    "-c",
    "format.coverLetter=false",
];

/// Finds the result's tip: HEAD when the work tree holds nothing more, else a commit on top of
/// HEAD recording the rest; when the history since the base is not a straight line (HEAD moved
/// behind the base, or merges), one commit on the base holding the final tree. Prints
/// `result <tip> <commits since base> <linear yes|no> <uncommitted yes|no>`; on failure, what
/// failed and git's last words.
const PREPARE: &str = r#"
base=$1 err=$2.err index=$2.index
: >"$err"
g cat-file -e "$base^{commit}" || fail "the base commit $base is not in the repository"
head=$(g rev-parse --verify HEAD) || fail "HEAD names no commit"
export GIT_INDEX_FILE="$index"
rm -f "$index"
g read-tree "$head" || fail "reading HEAD into a scratch index"
g add -A -- . ':(exclude).aider*' || fail "staging the work tree in a scratch index"
tree=$(g write-tree) || fail "writing the work tree"
unset GIT_INDEX_FILE
rm -f "$index"
commits=$(g rev-list --count "$base..$head") || fail "counting the commits since the base"
linear=yes
g merge-base --is-ancestor "$base" "$head" || linear=no
[ -z "$(g rev-list --merges "$base..$head")" ] || linear=no
uncommitted=no
[ "$tree" = "$(g rev-parse "$head^{tree}")" ] || uncommitted=yes
export GIT_AUTHOR_NAME=runner GIT_AUTHOR_EMAIL=runner@localhost
export GIT_COMMITTER_NAME=runner GIT_COMMITTER_EMAIL=runner@localhost
if [ "$linear" = yes ]; then
  tip=$head
  if [ "$uncommitted" = yes ]; then
    tip=$(g commit-tree --no-gpg-sign -p "$head" -m "Uncommitted changes left in the work tree" "$tree") \
      || fail "recording the uncommitted changes"
  fi
elif [ "$tree" = "$(g rev-parse "$base^{tree}")" ]; then
  tip=$base
else
  tip=$(g commit-tree --no-gpg-sign -p "$base" -m "All changes since $base" "$tree") \
    || fail "recording the changes since the base"
fi
echo "result $tip $commits $linear $uncommitted"
"#;

/// Writes the bundle of `$2..$1` (base excluded, tip as its `HEAD`) to `$3`, through a scratch
/// bare repository that borrows the work repository's objects: the work repository gains no ref.
const BUNDLE: &str = r#"
tip=$1 base=$2 file=$3 err=$3.err scratch=$3.git
: >"$err"
objects=$(g rev-parse --path-format=absolute --git-path objects) \
  || fail "finding the repository's objects"
format=$(g rev-parse --show-object-format) || fail "finding the object format"
rm -rf "$scratch"
g init --quiet --bare --object-format="$format" "$scratch" || fail "making a scratch repository"
echo "$objects" >"$scratch/objects/info/alternates"
echo "$tip" >"$scratch/HEAD"
g --git-dir="$scratch" bundle create --quiet "$file" HEAD "^$base" || fail "git bundle"
rm -rf "$scratch"
"#;

/// What the scripts above start with: `fail STEP` prints the step and the last lines of `$err`,
/// then exits 1; `g` runs git with [`GIT`]'s options, its stderr appended to `$err`.
const SCRIPT_HELPERS: &str = r#"set -u
fail() { echo "$1: $(tail -n 3 "$err" | tr '\n' ' ')"; exit 1; }
g() { "$GIT" "$@" 2>>"$err"; }
"#;

/// One of the scripts above, ready for `sh -c`.
fn git_script(body: &str) -> String {
    // The options hold no spaces or quotes, so they can be written into the script as is.
    format!("{SCRIPT_HELPERS}{body}").replace("\"$GIT\"", &GIT.join(" "))
}

/// Runs `"$@"` with stderr kept aside (exec output interleaves it with stdout): on failure,
/// prints its end instead.
const QUIET: &str = r#"err=$1; shift; "$@" 2>"$err" || { s=$?; tail -n 3 "$err"; exit $s; }"#;

/// What left the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// `result.patch`: the commits since the base as `git format-patch` messages, then the
    /// uncommitted changes as one more message. Empty when nothing changed.
    pub patch: PathBuf,
    /// `result.bundle`: the patch's commits (uncommitted changes included), its last one as
    /// `HEAD`, when anything changed.
    pub bundle: Option<PathBuf>,
    /// Commits made since the base.
    pub commits: usize,
    /// Paths that differ between the base and the final work tree.
    pub files_changed: Vec<String>,
    /// True when the work tree held changes beyond the last commit (the patch's last message).
    pub uncommitted: bool,
}

impl Exported {
    /// True when the job changed nothing at all (not an error: the patch is empty).
    pub fn is_empty(&self) -> bool {
        self.commits == 0 && self.files_changed.is_empty()
    }
}

/// Exports the work in `container` since `base_commit` into `out_dir` (`result.patch`, and
/// `result.bundle` when anything changed).
pub async fn export<S: Sandbox>(
    sandbox: &S,
    container: &str,
    base_commit: &str,
    out_dir: &Path,
) -> Result<Exported, ResultError> {
    let base = base_commit.trim();
    let full_id = matches!(base.len(), 40 | 64) && base.bytes().all(|b| b.is_ascii_hexdigit());
    if !full_id {
        return Err(ResultError::BadBase(base_commit.to_string()));
    }
    let run = Runner {
        sandbox,
        container,
        scratch: format!("/tmp/runner-export-{:016x}", rand::random::<u64>()),
    };
    let exported = run.export(base, out_dir).await;
    // Best effort: the container is usually removed right after anyway.
    let _ = run
        .exec(
            &["sh", "-c", r#"rm -rf "$1".*"#, "sh", &run.scratch],
            SMALL_OUTPUT,
        )
        .await;
    exported
}

/// The commands of one export, in one container.
struct Runner<'a, S> {
    sandbox: &'a S,
    container: &'a str,
    /// Prefix of the scratch files in the container's /tmp.
    scratch: String,
}

impl<S: Sandbox> Runner<'_, S> {
    async fn export(&self, base: &str, out_dir: &Path) -> Result<Exported, ResultError> {
        let prepared = self.prepare(base).await?;

        let (patch_bytes, files_changed) = if prepared.tip == base {
            (Vec::new(), Vec::new())
        } else {
            let range = format!("{base}..{}", prepared.tip);
            let patch = self
                .git(
                    "writing the patch",
                    &[
                        "format-patch",
                        "--stdout",
                        "--binary",
                        "--no-signature",
                        "--no-attach",
                        "--no-thread",
                        &range,
                    ],
                    "patch",
                )
                .await?;
            let names = self
                .git(
                    "listing the changed files",
                    &[
                        "diff-tree",
                        "-r",
                        "-z",
                        "--name-only",
                        "--no-renames",
                        base,
                        &prepared.tip,
                    ],
                    "file list",
                )
                .await?;
            let names = names
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            (patch, names)
        };
        // The patch and the names come from the sandbox: checked before anything is written.
        check_paths(&patch_bytes, &files_changed)?;
        tokio::fs::create_dir_all(out_dir)
            .await
            .map_err(io(out_dir))?;
        let patch = out_dir.join("result.patch");
        tokio::fs::write(&patch, &patch_bytes)
            .await
            .map_err(io(&patch))?;

        let bundle_path = out_dir.join("result.bundle");
        let bundle = if prepared.tip != base {
            let bytes = self.bundle(base, &prepared.tip).await?;
            tokio::fs::write(&bundle_path, &bytes)
                .await
                .map_err(io(&bundle_path))?;
            Some(bundle_path)
        } else {
            // A bundle from an earlier export into the same directory would be misleading.
            match tokio::fs::remove_file(&bundle_path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&bundle_path)(e)),
            }
            None
        };
        Ok(Exported {
            patch,
            bundle,
            commits: prepared.commits,
            files_changed,
            uncommitted: prepared.uncommitted,
        })
    }

    async fn prepare(&self, base: &str) -> Result<Prepared, ResultError> {
        let step = "finding the changes since the base";
        let script = git_script(PREPARE);
        let out = self
            .exec(
                &["sh", "-c", &script, "sh", base, &self.scratch],
                SMALL_OUTPUT,
            )
            .await?;
        let text = String::from_utf8_lossy(&out.output);
        if out.code != 0 {
            return Err(self.failed(step, out.code, &text));
        }
        text.lines()
            .rev()
            .find_map(Prepared::parse)
            .ok_or_else(|| self.failed(step, out.code, &text))
    }

    /// The bundle of `base..tip`, read out of the container.
    async fn bundle(&self, base: &str, tip: &str) -> Result<Vec<u8>, ResultError> {
        let file = format!("{}.bundle", self.scratch);
        let script = git_script(BUNDLE);
        let out = self
            .exec(&["sh", "-c", &script, "sh", tip, base, &file], SMALL_OUTPUT)
            .await?;
        if out.code != 0 {
            let text = String::from_utf8_lossy(&out.output);
            return Err(self.failed("writing the bundle", out.code, &text));
        }
        let size = self
            .exec(&["stat", "-c", "%s", &file], SMALL_OUTPUT)
            .await?;
        let size_text = String::from_utf8_lossy(&size.output).trim().to_string();
        let size: usize = match (size.code, size_text.parse()) {
            (0, Ok(size)) => size,
            _ => return Err(self.failed("measuring the bundle", size.code, &size_text)),
        };
        if size > MAX_RESULT_BYTES {
            return Err(ResultError::TooLarge {
                what: "bundle",
                limit: MAX_RESULT_BYTES,
            });
        }
        let read = self
            .exec(
                &["sh", "-c", r#"exec cat -- "$1" 2>/dev/null"#, "sh", &file],
                size + 1,
            )
            .await?;
        let bytes = read.output.to_vec();
        let header_ok =
            bytes.starts_with(b"# v2 git bundle\n") || bytes.starts_with(b"# v3 git bundle\n");
        if read.code != 0 || bytes.len() != size || !header_ok {
            return Err(self.failed(
                "reading the bundle",
                read.code,
                &format!("read {} bytes of {size}, or not a git bundle", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Runs git with the hardening options and stderr kept aside; returns stdout.
    async fn git(
        &self,
        step: &str,
        args: &[&str],
        what: &'static str,
    ) -> Result<Vec<u8>, ResultError> {
        let err = format!("{}.err", self.scratch);
        let argv: Vec<&str> = ["sh", "-c", QUIET, "sh", &err]
            .into_iter()
            .chain(GIT)
            .chain(args.iter().copied())
            .collect();
        let out = self.exec(&argv, MAX_RESULT_BYTES).await?;
        if out.code != 0 {
            return Err(self.failed(step, out.code, &String::from_utf8_lossy(&out.output)));
        }
        if out.truncated {
            return Err(ResultError::TooLarge {
                what,
                limit: MAX_RESULT_BYTES,
            });
        }
        Ok(out.output.to_vec())
    }

    async fn exec(
        &self,
        argv: &[&str],
        limit: usize,
    ) -> Result<crate::sandbox::ExecOutput, ResultError> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        Ok(self
            .sandbox
            .exec(self.container, &argv, None, limit)
            .await?)
    }

    fn failed(&self, step: &str, code: i64, output: &str) -> ResultError {
        let output = output.trim();
        let output: String = output.chars().take(2000).collect();
        ResultError::Container {
            step: step.to_string(),
            container: self.container.to_string(),
            code,
            output: if output.is_empty() {
                "no output".into()
            } else {
                output
            },
        }
    }
}

/// What the preparation script found.
#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    tip: String,
    commits: usize,
    uncommitted: bool,
}

impl Prepared {
    fn parse(line: &str) -> Option<Prepared> {
        let mut words = line.split_whitespace();
        let (Some("result"), Some(tip), Some(commits), Some(_linear), Some(uncommitted), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return None;
        };
        Some(Prepared {
            tip: tip.to_string(),
            commits: commits.parse().ok()?,
            uncommitted: uncommitted == "yes",
        })
    }
}

/// Refuses a result whose patch or file list names a path outside the repository or in `.git`.
fn check_paths(patch: &[u8], files_changed: &[String]) -> Result<(), ResultError> {
    if let Some(bad) = super::patch_paths::first_unsafe_path(patch) {
        return Err(ResultError::UnsafePath {
            path: bad.path,
            line: Some(bad.line),
            why: bad.why,
        });
    }
    for name in files_changed {
        if let Some(why) = super::patch_paths::unsafe_path(name) {
            return Err(ResultError::UnsafePath {
                path: name.clone(),
                line: None,
                why,
            });
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultError {
    let path = path.to_path_buf();
    move |source| ResultError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::HostShell;
    use super::*;
    use crate::repo::testutil::{commit, git_out, new_repo};

    /// A fresh clone of `origin` at `base`, the way a reviewer would apply the patch.
    fn clone_at(origin: &Path, base: &str, dest: &Path) {
        git_out(
            origin.parent().unwrap(),
            &[
                "clone",
                "--quiet",
                origin.to_str().unwrap(),
                dest.to_str().unwrap(),
            ],
        );
        git_out(dest, &["checkout", "--quiet", "--detach", base]);
    }

    /// A fresh clone of `origin` at `base` with the bundle's HEAD checked out.
    fn checkout_bundle(origin: &Path, base: &str, bundle: &Path, dest: &Path) -> PathBuf {
        clone_at(origin, base, dest);
        git_out(
            dest,
            &["fetch", "--quiet", bundle.to_str().unwrap(), "HEAD"],
        );
        git_out(dest, &["checkout", "--quiet", "FETCH_HEAD"]);
        dest.to_path_buf()
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap() == ".git" {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().display().to_string();
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn nothing_changed_is_an_empty_result() {
        let tmp = tempfile::tempdir().unwrap();
        let work = new_repo(tmp.path(), "work");
        let base = git_out(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join(".aider.chat.history.md"), "# chat\n").unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("result.bundle"), "stale").unwrap();

        let got = export(&HostShell::new(&work), "c", &base, &out)
            .await
            .unwrap();
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(
            got,
            Exported {
                patch: out.join("result.patch"),
                bundle: None,
                commits: 0,
                files_changed: vec![],
                uncommitted: false,
            }
        );
        assert_eq!(std::fs::read(&got.patch).unwrap(), b"");
        assert!(!out.join("result.bundle").exists());
    }

    #[tokio::test]
    async fn commits_and_uncommitted_work_replay_on_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let work = new_repo(tmp.path(), "work");
        commit(&work, "old.txt", "old\n", "old file");
        commit(&work, "greet.py", "def greet():\n    pass\n", "stub");
        let base = git_out(&work, &["rev-parse", "HEAD"]);
        commit(
            &work,
            "greet.py",
            "def greet(name):\n    return name\n",
            "greet takes a name",
        );
        let head = git_out(&work, &["rev-parse", "HEAD"]);
        // Left uncommitted: an edit, a deletion, new files (one binary), and Aider's own files.
        std::fs::write(
            work.join("greet.py"),
            "def greet(name):\n    return f\"Hello, {name}!\"\n",
        )
        .unwrap();
        std::fs::remove_file(work.join("old.txt")).unwrap();
        std::fs::create_dir(work.join("tests")).unwrap();
        std::fs::write(work.join("tests/test_greet.py"), "assert True\n").unwrap();
        std::fs::write(work.join("logo.bin"), [0u8, 159, 146, 150, 0, 255]).unwrap();
        std::fs::write(work.join(".aider.chat.history.md"), "# chat\n").unwrap();
        std::fs::create_dir(work.join(".aider.tags.cache.v3")).unwrap();
        std::fs::write(work.join(".aider.tags.cache.v3/cache.db"), "x").unwrap();
        let status_before = git_out(&work, &["status", "--porcelain"]);
        let expected: Vec<_> = files(&work)
            .into_iter()
            .filter(|(name, _)| !name.starts_with(".aider"))
            .collect();

        let out = tmp.path().join("out");
        let got = export(&HostShell::new(&work), "c", &base, &out)
            .await
            .unwrap();
        assert_eq!(got.commits, 1);
        assert!(got.uncommitted && !got.is_empty());
        assert_eq!(
            got.files_changed,
            ["greet.py", "logo.bin", "old.txt", "tests/test_greet.py"]
        );
        assert_eq!(
            got.bundle.as_deref(),
            Some(out.join("result.bundle").as_path())
        );
        // The container's repository is left as it was.
        assert_eq!(git_out(&work, &["rev-parse", "HEAD"]), head);
        assert_eq!(git_out(&work, &["status", "--porcelain"]), status_before);

        let patch = std::fs::read_to_string(&got.patch).unwrap();
        assert_eq!(patch.matches("\nSubject: [PATCH ").count(), 2, "{patch}");
        assert!(patch.contains("Uncommitted changes left in the work tree"));
        assert!(!patch.contains(".aider"), "{patch}");

        let am = tmp.path().join("am");
        clone_at(&work, &base, &am);
        git_out(&am, &["am", "--quiet", got.patch.to_str().unwrap()]);
        assert_eq!(files(&am), expected);
        assert_eq!(
            git_out(&am, &["rev-list", "--count", &format!("{base}..HEAD")]),
            "2"
        );

        let apply = tmp.path().join("apply");
        clone_at(&work, &base, &apply);
        git_out(&apply, &["apply", got.patch.to_str().unwrap()]);
        assert_eq!(files(&apply), expected);

        let bundle = got.bundle.unwrap();
        git_out(
            &am,
            &["bundle", "verify", "--quiet", bundle.to_str().unwrap()],
        );
        let fetched = checkout_bundle(&work, &base, &bundle, &tmp.path().join("fetched"));
        assert_eq!(
            files(&fetched),
            expected,
            "the bundle's head holds the uncommitted work too"
        );
        assert_eq!(git_out(&fetched, &["rev-parse", "HEAD^"]), head);
        assert_eq!(
            git_out(&work, &["for-each-ref"]).lines().count(),
            1,
            "the work repository gains no ref"
        );
    }

    #[tokio::test]
    async fn a_head_moved_behind_the_base_becomes_one_change_on_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let work = new_repo(tmp.path(), "work");
        let first = git_out(&work, &["rev-parse", "HEAD"]);
        commit(&work, "a.txt", "a\n", "a");
        let base = git_out(&work, &["rev-parse", "HEAD"]);
        git_out(&work, &["reset", "--quiet", "--hard", &first]);
        commit(&work, "b.txt", "b\n", "b");
        let expected = files(&work);

        let got = export(&HostShell::new(&work), "c", &base, &tmp.path().join("out"))
            .await
            .unwrap();
        assert_eq!(got.files_changed, ["a.txt", "b.txt"]);
        let am = tmp.path().join("am");
        clone_at(&work, &base, &am);
        git_out(&am, &["am", "--quiet", got.patch.to_str().unwrap()]);
        assert_eq!(files(&am), expected);
    }

    #[tokio::test]
    async fn a_sha256_repository_exports_a_bundle_in_its_own_format() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git_out(
            &work,
            &[
                "init",
                "--quiet",
                "--object-format=sha256",
                "--initial-branch=main",
            ],
        );
        let base = commit(&work, "README.md", "# demo\n", "first");
        assert_eq!(base.len(), 64);
        let head = commit(&work, "a.txt", "a\n", "a");
        std::fs::write(work.join("b.txt"), "b\n").unwrap();
        let expected = files(&work);

        let out = tmp.path().join("out");
        let got = export(&HostShell::new(&work), "c", &base, &out)
            .await
            .unwrap();
        let bundle = got.bundle.expect("changes make a bundle");
        let fetched = checkout_bundle(&work, &base, &bundle, &tmp.path().join("fetched"));
        assert_eq!(files(&fetched), expected);
        assert_eq!(git_out(&fetched, &["rev-parse", "HEAD^"]), head);
    }

    /// A commit on HEAD whose tree is HEAD's plus `name/config` (made with `mktree`, which,
    /// unlike `git add`, takes any name), then one that takes it away again: HEAD stays a tree
    /// git can check out, while the history in the patch and the bundle names `name`.
    fn commit_a_hidden_entry(work: &Path, name: &str) {
        let run = |args: &[&str], input: &str| -> String {
            use std::io::Write;
            let mut child = std::process::Command::new("git")
                .arg("-C")
                .arg(work)
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let blob = run(
            &["hash-object", "-w", "--stdin"],
            "[core]\n\tfsmonitor = evil\n",
        );
        let inner = run(&["mktree"], &format!("100644 blob {blob}\tconfig\n"));
        let listing = git_out(work, &["ls-tree", "HEAD"]);
        let tree = run(
            &["mktree"],
            &format!("{listing}\n040000 tree {inner}\t{name}\n"),
        );
        let head = git_out(work, &["rev-parse", "HEAD"]);
        let env = ["-c", "user.name=Test", "-c", "user.email=test@example.com"];
        let hidden = git_out(
            work,
            &[
                &env[..],
                &["commit-tree", "-p", &head, "-m", "hidden", &tree],
            ]
            .concat(),
        );
        let back = git_out(
            work,
            &[
                &env[..],
                &["commit-tree", "-p", &hidden, "-m", "back", "HEAD^{tree}"],
            ]
            .concat(),
        );
        git_out(work, &["update-ref", "HEAD", &back]);
    }

    #[tokio::test]
    async fn a_patch_into_git_or_out_of_the_repository_is_refused_before_anything_is_written() {
        for (name, path) in [(".GIT", ".GIT/config"), ("..", "../config")] {
            let tmp = tempfile::tempdir().unwrap();
            let work = new_repo(tmp.path(), "work");
            let base = git_out(&work, &["rev-parse", "HEAD"]);
            commit_a_hidden_entry(&work, name);
            commit(&work, "greet.py", "print('hi')\n", "greet");
            let out = tmp.path().join("out");
            let err = export(&HostShell::new(&work), "c", &base, &out)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ResultError::UnsafePath { path: p, .. } if p == path),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("nothing was pushed"), "{err}");
            assert!(!out.exists(), "nothing written for {name}");
        }
        // The work repository's own config cannot bend the prefixes out of the repository.
        let tmp = tempfile::tempdir().unwrap();
        let work = new_repo(tmp.path(), "work");
        let base = git_out(&work, &["rev-parse", "HEAD"]);
        commit(&work, "greet.py", "print('hi')\n", "greet");
        git_out(&work, &["config", "diff.dstPrefix", "b/../../"]);
        git_out(&work, &["config", "diff.srcPrefix", "a/.git/"]);
        let got = export(&HostShell::new(&work), "c", &base, &tmp.path().join("out"))
            .await
            .unwrap();
        let patch = std::fs::read_to_string(&got.patch).unwrap();
        assert!(patch.contains("\n+++ b/greet.py\n"), "{patch}");
    }

    #[tokio::test]
    async fn a_bad_or_unknown_base_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let work = new_repo(tmp.path(), "work");
        let shell = HostShell::new(&work);
        let out = tmp.path().join("out");
        let err = export(&shell, "c", "main; rm -rf /", &out)
            .await
            .unwrap_err();
        assert!(matches!(err, ResultError::BadBase(_)), "{err}");
        assert_eq!(shell.exec_count(), 0);

        let unknown = "0123456789012345678901234567890123456789";
        let err = export(&shell, "c1", unknown, &out)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "finding the changes since the base failed in container c1 (exit code 1): \
                 the base commit 0123456789012345678901234567890123456789 is not in the repository"
            ),
            "{err}"
        );
    }
}
