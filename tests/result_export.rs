//! The result path against the real Docker engine and real git: a repository is mirrored,
//! checked out and uploaded as a tar into a `runner/base:bookworm` container, worked on inside,
//! then verified and exported through the `Sandbox` trait. On the host, the patch must replay on
//! the base with `git am` and `git apply`, the bundle must verify and fetch, and the branch push
//! must land in the origin. Pull requests go to a GitHub API stub on a loopback port.

use runner::job::RepoSource;
use runner::repo::{checkout, mirror, push_branch, tar_tree, RepoError};
use runner::result::{export, open_pull_request, verify, ResultError};
use runner::sandbox::DockerSandbox;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const IMAGE: &str = "runner/base:bookworm";

/// A test container, force-removed when dropped (also when the test fails).
struct Container {
    name: String,
}

impl Container {
    fn start() -> Container {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "runner-test-export-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("docker")
            .args(["run", "-d", "--rm", "--name", &name])
            .args(["--label", "runner.test=1", "--network", "none"])
            .args(["--user", "1000:1000"])
            .args(["--tmpfs", "/workspace:rw,exec,uid=1000,gid=1000"])
            .args(["--pull", "never", IMAGE, "sleep", "300"])
            .output()
            .expect("docker cli");
        assert!(
            out.status.success(),
            "docker run {IMAGE} (build it with `runner images build base`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container { name }
    }

    /// Unpacks a tar into /workspace, as the sandbox user.
    fn upload(&self, tar: &[u8]) {
        let mut child = Command::new("docker")
            .args(["exec", "-i", "-u", "1000", &self.name])
            .args(["tar", "-x", "-C", "/workspace"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker cli");
        child.stdin.take().unwrap().write_all(tar).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tar -x: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a shell script in /workspace as the sandbox user; returns stdout, trimmed.
    #[track_caller]
    fn sh(&self, script: &str) -> String {
        let out = Command::new("docker")
            .args(["exec", "-u", "1000", "-w", "/workspace", &self.name])
            .args(["sh", "-c", script])
            .output()
            .expect("docker cli");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// Runs git in `dir` with a fixed identity and no user configuration; returns stdout, trimmed.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare `origin.git` under `dir`, filled from a `seed` work repository that stays beside it.
fn origin_repo(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let seed = dir.join("seed");
    std::fs::create_dir(&seed).unwrap();
    git(&seed, &["init", "--quiet"]);
    std::fs::write(seed.join("README.md"), "# demo\n").unwrap();
    std::fs::write(seed.join("greet.py"), "def greet(name):\n    pass\n").unwrap();
    std::fs::write(seed.join("old.txt"), "to be removed\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "--quiet", "-m", "start"]);
    let origin = dir.join("origin.git");
    git(dir, &["clone", "--quiet", "--bare", "seed", "origin.git"]);
    git(
        &seed,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    (seed, origin)
}

/// A fresh clone of `origin` detached at `base`.
fn clone_at(origin: &Path, base: &str, dest: &Path) {
    git(
        dest.parent().unwrap(),
        &[
            "clone",
            "--quiet",
            origin.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
    );
    git(dest, &["checkout", "--quiet", "--detach", base]);
}

#[tokio::test(flavor = "multi_thread")]
async fn work_in_a_container_exports_as_patch_bundle_and_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, origin) = origin_repo(tmp.path());
    let cache = tmp.path().join("cache");
    let source = RepoSource::Path(origin.clone());
    let mirror_dir = mirror(&cache, &source).unwrap();
    // A commit pushed after the first use arrives by fetch, and becomes the default base.
    std::fs::write(seed.join("README.md"), "# demo\n\nSays hello.\n").unwrap();
    git(&seed, &["commit", "--quiet", "-am", "describe"]);
    git(&seed, &["push", "--quiet", "origin", "main"]);
    assert_eq!(mirror(&cache, &source).unwrap(), mirror_dir);

    let work = checkout(&mirror_dir, None, &tmp.path().join("work")).unwrap();
    let base = work.base_commit.clone();
    assert_eq!(base, git(&origin, &["rev-parse", "main"]));
    let tar = tar_tree(&work.dir).unwrap();

    let container = Container::start();
    container.upload(&tar);
    assert_eq!(
        container.sh("stat -c %u:%g .git/HEAD greet.py"),
        "1000:1000\n1000:1000"
    );
    assert_eq!(container.sh("git branch --show-current"), "runner/work");
    assert_eq!(container.sh("git rev-parse HEAD"), base);
    // What Aider would leave: a commit, then uncommitted edits, a staged deletion, a new file,
    // and its own history files.
    container.sh(
        r#"set -e
        printf 'def greet(name):\n    return "Hello, " + name\n' > greet.py
        git -c user.name=aider -c user.email=aider@example.com commit -q -am "greet returns a greeting"
        printf 'def greet(name):\n    return f"Hello, {name}!"\n' > greet.py
        git rm -q old.txt
        mkdir tests && printf 'from greet import greet\nassert greet("a") == "Hello, a!"\n' > tests/test_greet.py
        printf '# aider chat\n' > .aider.chat.history.md
        mkdir .aider.tags.cache.v3 && printf x > .aider.tags.cache.v3/cache.db"#,
    );
    let head = container.sh("git rev-parse HEAD");

    let sandbox = DockerSandbox::connect().await.unwrap();
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    // Without a .gitignore, byte-code caches a check leaves behind would be part of the result
    // like any other untracked file; this repository has none, so the check writes none.
    let passed = verify(
        &sandbox,
        &container.name,
        &argv("PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=. python3 tests/test_greet.py && echo ok"),
        4096,
    )
    .await
    .unwrap();
    assert!(passed.passed, "{passed:?}");
    assert_eq!((passed.code, passed.output.as_str()), (0, "ok\n"));
    let failed = verify(
        &sandbox,
        &container.name,
        &argv("echo nope >&2; exit 3"),
        4096,
    )
    .await
    .unwrap();
    assert_eq!((failed.passed, failed.code), (false, 3));
    assert_eq!(failed.output, "nope\n");

    let out = tmp.path().join("artifacts");
    let exported = export(&sandbox, &container.name, &base, &out)
        .await
        .unwrap();
    assert_eq!(exported.commits, 1);
    assert!(exported.uncommitted && !exported.is_empty());
    assert_eq!(exported.patch, out.join("result.patch"));
    assert_eq!(
        exported.files_changed,
        ["greet.py", "old.txt", "tests/test_greet.py"]
    );
    // Export leaves the container's repository alone.
    assert_eq!(container.sh("git rev-parse HEAD"), head);
    assert_eq!(container.sh("git diff --cached --name-only"), "old.txt");
    // The tree the work ended at, recorded only now for the comparison.
    let final_tree = container.sh("git add -A -- . ':(exclude).aider*' && \
         git -c user.name=t -c user.email=t@e commit -q -m final && git rev-parse 'HEAD^{tree}'");

    let patch = exported.patch.to_str().unwrap();
    let am = tmp.path().join("am");
    clone_at(&origin, &base, &am);
    git(&am, &["am", "--quiet", patch]);
    assert_eq!(git(&am, &["rev-parse", "HEAD^{tree}"]), final_tree);
    assert_eq!(git(&am, &["log", "-1", "--format=%an"]), "runner");
    let apply = tmp.path().join("apply");
    clone_at(&origin, &base, &apply);
    git(&apply, &["apply", "--index", patch]);
    assert_eq!(git(&apply, &["write-tree"]), final_tree);

    let bundle = exported.bundle.expect("changes make a bundle");
    assert_eq!(bundle, out.join("result.bundle"));
    let bundle_arg = bundle.to_str().unwrap();
    let fetched = tmp.path().join("fetched");
    clone_at(&origin, &base, &fetched);
    git(&fetched, &["bundle", "verify", "--quiet", bundle_arg]);
    git(&fetched, &["fetch", "--quiet", bundle_arg, "HEAD"]);
    assert_eq!(
        git(&fetched, &["rev-parse", "FETCH_HEAD^{tree}"]),
        final_tree,
        "the bundle's head is the final work tree, uncommitted changes included"
    );
    assert_eq!(git(&fetched, &["rev-parse", "FETCH_HEAD^"]), head);
    let tip = git(&fetched, &["rev-parse", "FETCH_HEAD"]);

    push_branch(&source, &mirror_dir, &bundle, "runner/add-greeting").unwrap();
    assert_eq!(
        git(&origin, &["rev-parse", "refs/heads/runner/add-greeting"]),
        tip,
        "the pushed branch carries the whole result"
    );
    let err = push_branch(&source, &mirror_dir, &bundle, "main").unwrap_err();
    assert!(matches!(err, RepoError::BranchExists { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("branch `main` already exists in "),
        "{err}"
    );
    assert_eq!(git(&origin, &["rev-parse", "main"]), base);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_work_tree_is_an_empty_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, origin) = origin_repo(tmp.path());
    let mirror_dir = mirror(&tmp.path().join("cache"), &RepoSource::Path(origin)).unwrap();
    let work = checkout(&mirror_dir, Some("main"), &tmp.path().join("work")).unwrap();
    let container = Container::start();
    container.upload(&tar_tree(&work.dir).unwrap());
    container.sh("printf '# chat\\n' > .aider.chat.history.md");

    let sandbox = DockerSandbox::connect().await.unwrap();
    let out = tmp.path().join("artifacts");
    let exported = export(&sandbox, &container.name, &work.base_commit, &out)
        .await
        .unwrap();
    assert!(exported.is_empty(), "{exported:?}");
    assert_eq!((exported.commits, exported.bundle), (0, None));
    assert_eq!(std::fs::read(&exported.patch).unwrap(), b"");
    // Scratch files in the container's /tmp are cleaned up.
    assert_eq!(container.sh("ls /tmp | grep runner-export || true"), "");
}

/// What the GitHub stub saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: String,
    accept: String,
    user_agent: String,
    body: serde_json::Value,
}

/// A stub of GitHub's pull requests on a loopback port. `POST /repos/{owner}/{name}/pulls`
/// answers 201 with an `html_url` and remembers the pull request as open, except for the
/// repository `dup`, which gets GitHub's 422 for a pull request that exists. `GET` lists the open
/// pull requests whose `head` (`owner:branch`) and `state` match the query, as GitHub does.
async fn github_stub() -> (String, Arc<Mutex<Vec<Seen>>>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::Json;

    #[derive(Clone, Default)]
    struct Stub {
        seen: Arc<Mutex<Vec<Seen>>>,
        /// Open pull requests: (`owner:branch`, html_url).
        open: Arc<Mutex<Vec<(String, String)>>>,
    }

    async fn create(
        State(stub): State<Stub>,
        UrlPath((owner, name)): UrlPath<(String, String)>,
        uri: Uri,
        headers: HeaderMap,
        Json(body): Json<serde_json::Value>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let header = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let head = body["head"].as_str().unwrap_or("").to_string();
        stub.seen.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            authorization: header("authorization"),
            accept: header("accept"),
            user_agent: header("user-agent"),
            body,
        });
        if name == "dup" {
            let answer = serde_json::json!({
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "code": "custom",
                            "message": "A pull request already exists for org:runner/x."}],
                "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                "status": "422"
            });
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(answer));
        }
        let mut open = stub.open.lock().unwrap();
        let url = format!(
            "https://github.example/{owner}/{name}/pull/{}",
            7 + open.len()
        );
        open.push((format!("{owner}:{head}"), url.clone()));
        (
            StatusCode::CREATED,
            Json(serde_json::json!({"number": 7, "html_url": url})),
        )
    }

    /// `%XX` escapes decoded (enough for the `owner:branch` of a query).
    fn decode(s: &str) -> String {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    async fn list(State(stub): State<Stub>, uri: Uri) -> Json<serde_json::Value> {
        let query: std::collections::HashMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        let head = query.get("head").cloned().unwrap_or_default();
        let open = query.get("state").map(String::as_str) == Some("open");
        let found: Vec<serde_json::Value> = stub
            .open
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| open && *h == head)
            .map(|(_, url)| serde_json::json!({"html_url": url, "state": "open"}))
            .collect();
        Json(serde_json::Value::Array(found))
    }

    let stub = Stub::default();
    let seen = stub.seen.clone();
    let app = axum::Router::new()
        .route(
            "/repos/{owner}/{name}/pulls",
            axum::routing::post(create).get(list),
        )
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_pull_request_is_opened_through_the_api() {
    let (api, seen) = github_stub().await;
    let url = open_pull_request(
        &format!("{api}/"),
        "s3cret-token",
        "org/app",
        "runner/add-greeting",
        "main",
        "Add greet()",
        "Made by runner.",
    )
    .await
    .unwrap();
    assert_eq!(url, "https://github.example/org/app/pull/7");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/repos/org/app/pulls");
    assert_eq!(seen[0].authorization, "Bearer s3cret-token");
    assert_eq!(seen[0].accept, "application/vnd.github+json");
    assert_eq!(seen[0].user_agent, "runner");
    assert_eq!(
        seen[0].body,
        serde_json::json!({"title": "Add greet()", "head": "runner/add-greeting",
                           "base": "main", "body": "Made by runner."})
    );
}

#[tokio::test]
async fn a_pull_request_open_for_the_branch_is_returned_instead_of_opening_a_second() {
    let (api, seen) = github_stub().await;
    let open = |head: &'static str| {
        let api = api.clone();
        async move {
            open_pull_request(&api, "t0ken", "org/app", head, "main", "Add greet()", "b")
                .await
                .unwrap()
        }
    };
    let first = open("runner/greet").await;
    // Asked again for the same branch (a runner restarted after a crash): the same one.
    assert_eq!(open("runner/greet").await, first);
    // Another branch gets its own.
    let other = open("runner/other").await;
    assert_ne!(other, first);
    let posts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body["head"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(posts, ["runner/greet", "runner/other"]);
}

#[tokio::test]
async fn github_refusals_and_unreachable_apis_are_clear_errors() {
    let (api, _) = github_stub().await;
    let err = open_pull_request(
        &api,
        "s3cret-token",
        "org/dup",
        "runner/x",
        "main",
        "t",
        "b",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ResultError::GitHub { status: 422, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert_eq!(
        text,
        "github refused to open the pull request on org/dup (422): Validation Failed: \
         A pull request already exists for org:runner/x.: check that the branch was pushed, \
         that `output.base` exists, and that no pull request is already open for the branch"
    );
    assert!(!format!("{err:?}").contains("s3cret"));

    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = open_pull_request(
        &format!("http://{addr}"),
        "s3cret-token",
        "org/app",
        "h",
        "main",
        "t",
        "b",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ResultError::Request { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach the GitHub API at http://{addr}/repos/org/app/pulls"
        )),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret"));

    let err = open_pull_request(&api, "t", "not-a-repo", "h", "main", "t", "b")
        .await
        .unwrap_err();
    assert!(matches!(err, ResultError::BadRepo(_)), "{err}");
}
