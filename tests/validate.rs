//! Job-file validation through the CLI: bad files give exit 2 with `path:line:col: message`, and
//! hostile files are refused fast without creating anything.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn valid_files_and_directories_pass() {
    let env = Env::new();
    env.job("dir/a.yaml", &sh_job("a", "true", ""));
    env.job("dir/b.yml", &sh_job("b", "true", ""));
    let out = env.run(&["validate", path_str(&env.dir.path().join("dir"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!env.state.exists(), "validate touches no state");
}

#[test]
fn bad_job_files_exit_2_with_located_errors_and_nothing_is_submitted() {
    let env = Env::new();
    let cases = [
        (
            "unknown-field.yaml",
            "name: a\nimage: x\ncommand: [\"true\"]\nprivileged: true\n",
            4,
        ),
        (
            "bad-name.yaml",
            "name: Not_Valid\nimage: x\ncommand: [\"true\"]\n",
            1,
        ),
        (
            "bad-duration.yaml",
            "name: a\nimage: x\ncommand: [\"true\"]\ntimeout: soon\n",
            4,
        ),
        (
            "both.yaml",
            "name: a\nimage: x\ncommand: [\"true\"]\ntask: do it\n",
            0,
        ),
        (
            "negative.yaml",
            "name: a\nimage: x\ncommand: [\"true\"]\nresources:\n  cpus: -1\n",
            5,
        ),
    ];
    for (file, yaml, line) in cases {
        let path = env.job(file, yaml);
        let out = env.run(&["validate", path_str(&path)]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        let err = stderr(&out);
        let prefix = format!("{}:", path.display());
        assert!(err.contains(&prefix), "{file}: error names the file: {err}");
        if line > 0 {
            assert!(
                err.contains(&format!("{}:{line}:", path.display())),
                "{file}: located at line {line}: {err}"
            );
        }
        let out = env.run(&["submit", path_str(&path)]);
        assert_eq!(out.status.code(), Some(2), "{file}");
    }
    if env.state.join("runner.db").exists() {
        assert!(env.ps().is_empty(), "no job was stored");
    }
}

#[test]
fn hostile_files_are_refused_fast() {
    let env = Env::new();
    let bomb = "name: a\nimage: x\ncommand: [\"true\"]\nenv:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let huge = format!(
        "name: a\nimage: x\ncommand: [\"true\"]\n# {}\n",
        "x".repeat(3 << 20)
    );
    let deep = format!(
        "name: a\nimage: x\ncommand: {}{}\n",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let garbage: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let paths = [
        env.job("bomb.yaml", bomb),
        env.job("huge.yaml", &huge),
        env.job("deep.yaml", &deep),
        env.job("garbage.yaml", ""),
    ];
    std::fs::write(&paths[3], garbage).unwrap();
    for path in &paths {
        let started = Instant::now();
        let out = env.run(&["validate", path_str(path)]);
        let elapsed = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&path.display().to_string()),
            "{}",
            stderr(&out)
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "{} took {elapsed:?}",
            path.display()
        );
    }
}

#[test]
fn escapes_and_privilege_requests_are_refused_with_locations_creating_nothing() {
    let env = Env::new();
    let base = "name: a\nimage: x\ncommand: [\"true\"]\n";
    let agent = "name: a\ntask: t\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "traversal-repo.yaml",
            format!("{agent}repo: ../../../../etc\n"),
            "outside the job file's directory",
        ),
        (
            "absolute-repo.yaml",
            format!("{agent}repo: /etc\n"),
            "outside the job file's directory",
        ),
        (
            "traversal-record.yaml",
            format!("{base}llm: {{ record: ../../../tmp/overwrite-me }}\n"),
            "outside the job file's directory",
        ),
        (
            "privileged.yaml",
            format!("{base}privileged: true\n"),
            "unknown field `privileged`",
        ),
        (
            "host-network.yaml",
            format!("{base}network: host\n"),
            "network",
        ),
        (
            "cap-add.yaml",
            format!("{base}cap_add: [SYS_ADMIN]\n"),
            "unknown field `cap_add`",
        ),
        (
            "volumes.yaml",
            format!("{base}volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n"),
            "unknown field `volumes`",
        ),
        (
            "nested-mount.yaml",
            format!("{base}resources: {{ cpus: 1, devices: [/dev/kvm] }}\n"),
            "unknown field `devices`",
        ),
    ];
    for (file, yaml, expected) in &cases {
        let path = env.job(file, yaml);
        let started = Instant::now();
        let out = env.run(&["submit", path_str(&path)]);
        let elapsed = started.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(expected), "{file}: {err}");
        let located = err.lines().any(|l| {
            l.strip_prefix(&format!("{}:", path.display()))
                .and_then(|rest| rest.split(':').next())
                .is_some_and(|line| line.parse::<usize>().is_ok())
        });
        assert!(located, "{file}: not located: {err}");
        assert!(elapsed < Duration::from_secs(1), "{file} took {elapsed:?}");
    }
    assert!(!std::path::Path::new("/tmp/overwrite-me").exists());
    if env.state.join("runner.db").exists() {
        assert!(env.ps().is_empty(), "nothing was stored");
    }
}
