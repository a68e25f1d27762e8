//! Publishing survives crashes: the real binary is killed with SIGKILL while `git push` runs
//! (held by a `git` wrapper first in its PATH) or while the pull request is being opened (held by
//! a stub forge), then started again. The result the first attempt made is delivered once, from
//! the stored bundle, never redone; a stored result changed after the crash is never delivered;
//! and each attempt keeps its own result files. Agent jobs run real Aider against a scripted
//! model, the branch goes to a bare repository on disk, pull requests to a loopback stub.

mod common;
mod scripted;

use common::*;
use scripted::{create_file, ScriptedLlm};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const VERIFY: &str = "verify: [\"python3\", \"-c\", \"from greet import greet; assert greet('Ann') == 'Hello, Ann!'\"]";
const MANAGER: &str = "{ mode: script, steps: [ { action: instruct, argument: \"Create greet.py\" }, { action: finish, argument: done } ] }";
const BRANCH: &str = "runner/greet";

/// A forge on disk (`<tmp>/org/app.git`), a `git` wrapper that holds pushes while
/// `<tmp>/hold-push` exists, and a scripted model making `edits`.
struct Setup {
    env: Env,
    origin: PathBuf,
    bin: PathBuf,
    llm: ScriptedLlm,
}

impl Setup {
    fn new(edits: Vec<String>) -> Setup {
        let env = Env::new();
        let work = env.dir.path().join("repo");
        make_repo(&work);
        let origin = env.dir.path().join("org/app.git");
        let out = Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&work)
            .arg(&origin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let real = stdout(
            &Command::new("sh")
                .args(["-c", "command -v git"])
                .output()
                .unwrap(),
        );
        let bin = env.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let dir = env.dir.path().display().to_string();
        // The runner starts git as the leader of its own process group: the wrapper's pid is
        // that group, which the test can kill whole to cut a push short.
        let wrapper = format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = push ] && [ -e '{dir}/hold-push' ]; then\n    echo $$ > '{dir}/push.pid'\n    while [ -e '{dir}/hold-push' ]; do sleep 0.05; done\n    break\n  fi\ndone\nexec '{}' \"$@\"\n",
            real.trim()
        );
        let git = bin.join("git");
        std::fs::write(&git, wrapper).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
        let llm = ScriptedLlm::start(vec![], edits);
        Setup {
            env,
            origin,
            bin,
            llm,
        }
    }

    /// Submits the job with `output` (and `extra` lines) and returns its id.
    fn submit(&self, output: &str, extra: &str) -> String {
        let job = self.env.job(
            "greet.yaml",
            &format!(
                "name: greet\ntask: Add greet.\nrepo: file://{}\nagent: {{ model: openai/mock }}\nmanager: {MANAGER}\ntimeout: 5m\n{VERIFY}\noutput: {output}\n{extra}\n",
                self.origin.display()
            ),
        );
        let out = self.env.run(&["submit", path_str(&job)]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    }

    fn hold_pushes(&self, hold: bool) {
        let path = self.env.dir.path().join("hold-push");
        if hold {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts a daemon with the git wrapper first in its PATH (and `forge` allowed the token).
    fn daemon(&mut self, forge: Option<&str>) -> u32 {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let vars = [
            ("PATH", path.as_str()),
            ("OPENAI_BASE_URL", self.llm.url.as_str()),
            ("RUNNER_TEST_FORGE_TOKEN", "forge-token-5e1f"),
        ];
        // The operator allows the token to go to the stub forge only.
        let allow = forge.map(|url| format!("RUNNER_TEST_FORGE_TOKEN={url}"));
        let args: Vec<&str> = match &allow {
            Some(allow) => vec!["--allow-pr-token", allow],
            None => vec![],
        };
        self.env.spawn_daemon_env(&args, &vars)
    }

    /// Waits for the wrapper to hold a push; returns the wrapper's pid.
    fn wait_push_held(&self) -> u32 {
        let pid = self.env.dir.path().join("push.pid");
        wait_for("a held push", Duration::from_secs(180), || {
            std::fs::read_to_string(&pid)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
    }

    /// The commit `BRANCH` holds on the forge, if it exists.
    fn branch(&self) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.origin)
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{BRANCH}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| stdout(&out).trim().to_string())
    }

    fn file_on_branch(&self, file: &str) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.origin)
            .args(["show", &format!("{BRANCH}:{file}")])
            .output()
            .unwrap();
        stdout(&out)
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The artifacts of kind `kind`: (attempt, path).
fn artifacts(job: &serde_json::Value, kind: &str) -> Vec<(u64, String)> {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The head commit of a bundle file.
fn bundle_head(bundle: &str) -> String {
    let out = Command::new("git")
        .args(["bundle", "list-heads", bundle])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let heads = stdout(&out);
    let line = heads
        .lines()
        .find(|l| l.ends_with(" HEAD"))
        .or_else(|| heads.lines().next())
        .unwrap();
    line.split(' ').next().unwrap().to_string()
}

/// Kills the process group `pid` leads (the held push and its `sleep`).
fn kill_group(pid: u32) {
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
}

/// A stand-in for GitHub's pull requests. `POST` opens one (remembered as open) and, while
/// `hold` is set, keeps the answer back, like a forge that created the pull request just before
/// the runner died; `GET ?head=owner:branch&state=open` lists the open ones.
struct Forge {
    url: String,
    posts: Arc<Mutex<Vec<String>>>,
    hold: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

fn forge() -> Forge {
    use axum::extract::Path as UrlPath;
    let posts = Arc::new(Mutex::new(Vec::<String>::new()));
    let hold = Arc::new(AtomicBool::new(false));
    let (p, h) = (posts.clone(), hold.clone());
    let l = posts.clone();
    let app = axum::Router::new().route(
        "/repos/{owner}/{name}/pulls",
        axum::routing::post(
            move |UrlPath((owner, name)): UrlPath<(String, String)>, body: axum::body::Bytes| {
                let (posts, hold) = (p.clone(), h.clone());
                async move {
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let head = format!("{owner}:{}", body["head"].as_str().unwrap_or(""));
                    posts.lock().unwrap().push(head);
                    while hold.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let n = posts.lock().unwrap().len();
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({"number": n, "html_url": format!("https://forge.example/{owner}/{name}/pull/{n}")})),
                    )
                }
            },
        )
        .get(
            move |UrlPath((owner, name)): UrlPath<(String, String)>, uri: axum::http::Uri| {
                let posts = l.clone();
                async move {
                    let query = uri.query().unwrap_or("").replace("%3A", ":").replace("%2F", "/");
                    let open: Vec<serde_json::Value> = posts
                        .lock()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .filter(|(_, head)| {
                            query.contains(&format!("head={head}")) && query.contains("state=open")
                        })
                        .map(|(i, _)| serde_json::json!({"html_url": format!("https://forge.example/{owner}/{name}/pull/{}", i + 1)}))
                        .collect();
                    axum::Json(serde_json::Value::Array(open))
                }
            },
        ),
    );
    let (url, runtime) = serve_on_loopback(app);
    Forge {
        url,
        posts,
        hold,
        _runtime: runtime,
    }
}

#[test]
fn a_runner_killed_mid_push_and_mid_pull_request_delivers_the_first_result_once() {
    let forge = forge();
    let mut s = Setup::new(vec![create_file("greet.py", GREET)]);
    let output = format!(
        "{{ mode: pr, branch: {BRANCH}, base: main, api_url: \"{}\", token_env: RUNNER_TEST_FORGE_TOKEN, title: Add greet }}",
        forge.url
    );
    let id = s.submit(&output, "retries: 2");
    s.hold_pushes(true);
    forge.hold.store(true, Ordering::SeqCst);

    // 1. Killed while git pushes: the push goes on without it and lands.
    let daemon = s.daemon(Some(&forge.url));
    s.wait_push_held();
    s.env.signal_daemon(daemon, "KILL");
    s.hold_pushes(false);
    let pushed = wait_for("the orphaned push", Duration::from_secs(30), || s.branch());

    // 2. Restarted, it sees the branch delivered and opens the pull request; killed while the
    //    forge has opened it but not yet answered.
    let daemon = s.daemon(Some(&forge.url));
    wait_for("the pull request", Duration::from_secs(60), || {
        (!forge.posts.lock().unwrap().is_empty()).then_some(())
    });
    s.env.signal_daemon(daemon, "KILL");
    forge.hold.store(false, Ordering::SeqCst);

    // 3. Restarted again, it finds the pull request open and is done.
    let daemon = s.daemon(Some(&forge.url));
    s.env.wait_state(&id, "succeeded", Duration::from_secs(60));
    let show = s.env.show(&id);
    s.env.signal_daemon(daemon, "TERM");

    assert_eq!(show["attempts"].as_array().unwrap().len(), 1, "{show}");
    assert_eq!(
        s.llm.script.lock().unwrap().edit_calls,
        1,
        "the work is not redone"
    );
    let bundles = artifacts(&show, "bundle");
    assert_eq!(bundles.len(), 1, "{show}");
    assert_eq!(
        pushed,
        bundle_head(&bundles[0].1),
        "the first attempt's result"
    );
    assert_eq!(s.branch().as_deref(), Some(pushed.as_str()));
    assert_eq!(s.file_on_branch("greet.py"), GREET);
    assert_eq!(
        *forge.posts.lock().unwrap(),
        [format!("org:{BRANCH}")],
        "one pull request"
    );
    assert_eq!(
        artifacts(&show, "pull_request"),
        [(1, "https://forge.example/org/app/pull/1".to_string())]
    );
    assert!(s.env.containers().is_empty());
}

/// Runs a `mode: branch` job until its push is held, kills the runner and the push with it, and
/// returns the job id; the branch is not on the forge.
fn crash_mid_push(s: &mut Setup, extra: &str) -> String {
    let id = s.submit(&format!("{{ mode: branch, branch: {BRANCH} }}"), extra);
    s.hold_pushes(true);
    let daemon = s.daemon(None);
    let push = s.wait_push_held();
    s.env.signal_daemon(daemon, "KILL");
    kill_group(push);
    s.hold_pushes(false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.branch(), None, "the push was cut short");
    id
}

#[test]
fn a_push_cut_short_by_a_crash_is_finished_from_the_stored_bundle_on_restart() {
    let mut s = Setup::new(vec![create_file("greet.py", GREET)]);
    let id = crash_mid_push(&mut s, "retries: 2");
    let daemon = s.daemon(None);
    s.env.wait_state(&id, "succeeded", Duration::from_secs(60));
    let show = s.env.show(&id);
    s.env.signal_daemon(daemon, "TERM");
    assert_eq!(show["attempts"].as_array().unwrap().len(), 1, "{show}");
    assert_eq!(
        s.llm.script.lock().unwrap().edit_calls,
        1,
        "the work is not redone"
    );
    let bundles = artifacts(&show, "bundle");
    assert_eq!(
        s.branch(),
        Some(bundle_head(&bundles[0].1)),
        "the stored result is pushed"
    );
    assert_eq!(s.file_on_branch("greet.py"), GREET);
}

#[test]
fn a_stored_result_that_changed_after_the_crash_is_not_delivered() {
    let mut s = Setup::new(vec![create_file("greet.py", GREET)]);
    let id = crash_mid_push(&mut s, "");
    let bundles = artifacts(&s.env.show(&id), "bundle");
    let mut bytes = std::fs::read(&bundles[0].1).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&bundles[0].1, bytes).unwrap();

    let daemon = s.daemon(None);
    s.env.wait_state(&id, "failed", Duration::from_secs(60));
    let show = s.env.show(&id);
    s.env.signal_daemon(daemon, "TERM");
    assert_eq!(show["reason"], "infra", "{show}");
    let detail = show["detail"].as_str().unwrap();
    assert!(
        detail.contains("changed after it was exported") && detail.contains(&bundles[0].1),
        "{detail}"
    );
    assert_eq!(s.branch(), None, "nothing delivered");
}

#[test]
fn each_attempt_keeps_its_own_results_when_a_job_is_retried() {
    let second = format!("# attempt 2\n{GREET}");
    let mut s = Setup::new(vec![
        create_file("greet.py", GREET),
        create_file("greet.py", &second),
    ]);
    // Attempt 1's stored result changes after the crash: a retry makes a new one.
    let id = crash_mid_push(&mut s, "retries: 1");
    let first = artifacts(&s.env.show(&id), "patch");
    assert_eq!(first.len(), 1);
    let first_patch = std::fs::read_to_string(&first[0].1).unwrap();
    let bundle = artifacts(&s.env.show(&id), "bundle")[0].1.clone();
    std::fs::write(&bundle, "tampered").unwrap();

    let daemon = s.daemon(None);
    s.env.wait_state(&id, "succeeded", Duration::from_secs(180));
    let show = s.env.show(&id);
    s.env.signal_daemon(daemon, "TERM");
    assert_eq!(show["attempts"].as_array().unwrap().len(), 2, "{show}");
    let patches = artifacts(&show, "patch");
    let dir = s.env.state.join("artifacts").join(&id);
    assert_eq!(
        patches,
        [
            (1, dir.join("1/result.patch").display().to_string()),
            (2, dir.join("2/result.patch").display().to_string()),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&patches[0].1).unwrap(),
        first_patch,
        "attempt 1's patch is kept as it was"
    );
    assert!(!first_patch.contains("attempt 2"));
    assert!(std::fs::read_to_string(&patches[1].1)
        .unwrap()
        .contains("attempt 2"));
    let bundles = artifacts(&show, "bundle");
    assert_eq!(bundles[1].0, 2);
    assert_eq!(s.branch(), Some(bundle_head(&bundles[1].1)));
    assert_eq!(s.file_on_branch("greet.py"), second);
}
