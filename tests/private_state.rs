//! The state dir (database, WAL, logs, mirrors, work trees) is private to the runner's user,
//! whatever the user's umask; a state dir an older runner left readable is tightened once, with a
//! warning; files the runner makes for the user elsewhere keep the user's umask.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Every directory and file under `dir` (symlinks skipped), `dir` first. Entries that vanish
/// while it looks (a running job's scratch files) are left out.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let here = all[i].clone();
        i += 1;
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_symlink()) {
                all.push(path);
            }
        }
    }
    all
}

/// Paths under `dir` that a group or other user can use at all, with their modes. Files git
/// hard-linked from a local repository (a mirror's objects) share that repository's mode.
fn readable_by_others(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::symlink_metadata(&p).ok()?;
            let mode = meta.mode() & 0o7777;
            let linked = meta.is_file() && meta.nlink() > 1;
            (mode & 0o077 != 0 && !linked).then(|| format!("{} {mode:o}", p.display()))
        })
        .collect()
}

/// A `runner` command run with a permissive user umask (022), as a login shell would have.
fn with_umask_022(mut cmd: Command) -> Command {
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd.env_remove("RUNNER_LOG");
    cmd
}

#[test]
fn a_new_state_dir_is_private_while_a_job_runs_and_the_junit_report_is_the_users() {
    let env = Env::new();
    let repo = env.dir.path().join("app");
    make_repo(&repo);
    let job = env.job(
        "j.yaml",
        &sh_job("j", "cat README.md; sleep 4", "repo: app"),
    );
    let report = env.dir.path().join("report.xml");
    let mut child = with_umask_022(env.cmd())
        .args(["run", path_str(&job), "--junit", path_str(&report)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the job runs, the database's WAL and shared memory exist beside it.
    let log = env.state.join("logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        seen = tree(&log)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "log"))
            && env.state.join("runner.db-wal").exists();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen, "the job's log never appeared");
    let while_running = readable_by_others(&env.state);
    let files = tree(&env.state);
    let status = child.wait().unwrap();
    assert!(status.success(), "runner run failed");
    assert_eq!(while_running, Vec::<String>::new());
    for name in [
        "runner.db",
        "runner.db-wal",
        "runner.db-shm",
        "logs",
        "cache",
    ] {
        assert!(
            files.contains(&env.state.join(name)),
            "{name} missing: {files:?}"
        );
    }
    assert!(
        files
            .iter()
            .any(|p| p.starts_with(env.state.join("cache/repos"))
                && p.file_name().is_some_and(|n| n == "HEAD")),
        "no mirror: {files:?}"
    );
    assert_eq!(mode(&env.state), 0o700);
    assert_eq!(readable_by_others(&env.state), Vec::<String>::new());
    // Outside the state dir the user's umask decides.
    assert_eq!(mode(&report), 0o644);
}

#[test]
fn an_existing_readable_state_dir_is_tightened_once_with_one_warning() {
    let env = Env::new();
    let ps = || with_umask_022(env.cmd()).arg("ps").output().unwrap();
    assert!(ps().status.success());
    // What an older runner left: everything readable by all.
    std::fs::create_dir_all(env.state.join("logs/01J/")).unwrap();
    std::fs::write(env.state.join("logs/01J/1.log"), "transcript").unwrap();
    for path in tree(&env.state) {
        let open = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
    }

    let out = ps();
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!(
            "state dir {} was readable by other users",
            env.state.display()
        )) && warnings[0].contains("made it 0700"),
        "{warnings:?}"
    );
    assert_eq!(mode(&env.state), 0o700);
    assert_eq!(mode(&env.state.join("logs/01J/1.log")), 0o600);
    assert_eq!(mode(&env.state.join("runner.db")), 0o600);
    assert_eq!(readable_by_others(&env.state), Vec::<String>::new());

    let again = ps();
    assert!(!stderr(&again).contains("WARN"), "{}", stderr(&again));
}

/// A git command in `dir` with the user's umask (022) and no user configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    let out = with_umask_022(cmd).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn a_branch_pushed_into_a_local_repository_gets_the_users_umask_not_the_state_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    make_repo(&work);
    let origin = tmp.path().join("origin.git");
    git(tmp.path(), &["clone", "-q", "--bare", "work", "origin.git"]);
    let base = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("greet.py"), "print('hi')\n").unwrap();
    git(&work, &["add", "greet.py"]);
    git(&work, &["commit", "-q", "-m", "greet"]);
    let bundle = tmp.path().join("result.bundle");
    git(
        &work,
        &[
            "bundle",
            "create",
            "-q",
            path_str(&bundle),
            "HEAD",
            &format!("^{base}"),
        ],
    );
    let before = tree(&origin);

    // What `runner run` does before it touches the state dir, with a user umask of 022.
    // SAFETY: umask only swaps the mask; this test binary's other tests set their children's.
    unsafe { libc::umask(0o022) };
    runner::store::private::restrict_umask();
    let source = runner::job::RepoSource::Path(origin.clone());
    let mirror = runner::repo::mirror(&tmp.path().join("state/cache"), &source).unwrap();
    runner::repo::push_branch(&source, &mirror, &bundle, "runner/greet").unwrap();

    let made: Vec<PathBuf> = tree(&origin)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(
        made.iter().any(|p| p.ends_with("refs/heads/runner/greet")),
        "{made:?}"
    );
    let private: Vec<String> = made
        .iter()
        .filter(|p| mode(p) & 0o044 != 0o044)
        .map(|p| format!("{} {:o}", p.display(), mode(p)))
        .collect();
    assert_eq!(
        private,
        Vec::<String>::new(),
        "files the push made in the user's repository"
    );
    // The runner's own files stay private.
    assert_eq!(mode(&mirror.join("HEAD")) & 0o077, 0);
}
