//! The shipped Aider image (`runner images build aider`; `make test` builds it first): the pinned
//! version, the user and ownership the sandbox relies on, the system-wide git identity, the model
//! metadata, the build-time warm-up, and a start without network that reaches Aider's prompt.
//!
//! Every container is started with `--rm` and a unique name, and force-removed if it outlives
//! its deadline.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const IMAGE: &str = "runner/aider:0.86.2";

/// The flags the runner starts Aider with (docs/aider.md), pointed at an endpoint that is never used.
const AIDER_FLAGS: &str = "--model openai/mock --openai-api-base http://127.0.0.1:9/v1 \
    --openai-api-key test --model-metadata-file /etc/runner/aider-models.json \
    --model-settings-file /etc/runner/aider-model-settings.yml --edit-format diff \
    --no-fancy-input --no-pretty --yes-always --no-check-update --no-analytics \
    --no-show-model-warnings --no-show-release-notes --no-gitignore --timeout 5";

fn image_present() {
    let status = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("docker CLI runs");
    assert!(
        status.success(),
        "{IMAGE} is missing: build it with `runner images build aider` (`make test` does)"
    );
}

/// Runs `docker run --rm` on the image with `docker_args` before the image and `cmd` after it,
/// with empty stdin; kills the container if it runs longer than `deadline`.
fn run(docker_args: &[&str], cmd: &[&str], deadline: Duration) -> Output {
    image_present();
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "runner-test-aider-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut child = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--label",
            "runner.test=1",
            "--name",
            &name,
        ])
        .args(docker_args)
        .arg(IMAGE)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker CLI runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).map(|_| buf)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for docker run") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = Command::new("docker")
                .args(["rm", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} in {IMAGE} ran longer than {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap().expect("read stdout"),
        stderr: err.join().unwrap().expect("read stderr"),
    }
}

/// An output as text, for assertion messages.
fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a shell command in the image (default user, no network) and returns its trimmed stdout.
fn sh(script: &str) -> String {
    let output = run(
        &["--network", "none"],
        &["sh", "-c", script],
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "`{script}` failed in {IMAGE}: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn aider_is_the_pinned_version() {
    let output = run(
        &["--network", "none", "-u", "1000:1000"],
        &["aider", "--version"],
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "aider 0.86.2"
    );
}

#[test]
fn runs_as_uid_1000_in_a_workspace_it_owns() {
    assert_eq!(sh("id -u; id -g"), "1000\n1000");
    assert_eq!(sh("pwd; stat -c %u:%g /workspace"), "/workspace\n1000:1000");
    assert_eq!(
        sh("echo $HOME; stat -c %u /home/runner"),
        "/home/runner\n1000"
    );
}

#[test]
fn git_identity_and_safe_directory_are_system_wide() {
    assert_eq!(
        sh(
            "git config --system user.name; git config --system user.email; \
            git config --system --get-all safe.directory"
        ),
        "runner\nrunner@localhost\n*"
    );
}

#[test]
fn model_metadata_parses_and_names_the_models() {
    let json = sh("cat /etc/runner/aider-models.json");
    let models: serde_json::Value = serde_json::from_str(&json).expect("aider-models.json is JSON");
    for model in ["openai/mock", "openai/gpt-4o-mini"] {
        let entry = &models[model];
        assert_eq!(entry["litellm_provider"], "openai", "{model}: {entry}");
        assert!(
            entry["max_input_tokens"].as_u64().is_some(),
            "{model}: {entry}"
        );
        assert!(
            entry["input_cost_per_token"].as_f64().is_some(),
            "{model}: {entry}"
        );
        assert!(
            entry["output_cost_per_token"].as_f64().is_some(),
            "{model}: {entry}"
        );
    }
}

#[test]
fn the_build_warmed_aider_up_for_this_home() {
    let installs = sh("cat /home/runner/.aider/installs.json");
    assert!(installs.contains("0.86.2"), "{installs}");
}

#[test]
fn starts_without_network_under_the_sandbox_hardening_and_exits_on_eof() {
    let script =
        format!("git init -q /workspace/repo && cd /workspace/repo && exec aider {AIDER_FLAGS}");
    let output = run(
        &[
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev",
            "--tmpfs",
            "/workspace:rw,nosuid,nodev,exec,uid=1000,gid=1000,mode=0755",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--init",
            "-u",
            "1000:1000",
        ],
        &["sh", "-c", &script],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout.contains("Aider v0.86.2"), "{}", describe(&output));
    // A model-settings entry with `edit_format: diff` keeps the prompt plain.
    assert!(stdout.ends_with("\n> "), "{}", describe(&output));
}
