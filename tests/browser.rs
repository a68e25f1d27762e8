//! Mission Control in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver) against a real `runner serve --listen 127.0.0.1:0` on a state dir whose jobs the
//! test stores through the store's API. `make test` installs Chromium and chromedriver
//! (scripts/browsers.sh); without them these tests fail, they do not skip.
//!
//! Screenshots of the job list and a job page are kept under `target/browser-artifacts/`.

mod common;
mod scripted;

use fantoccini::{Client, ClientBuilder, Locator};
use runner::state::JobId;
use runner::state::{Outcome, Reason};
use runner::store::{NewJob, Role, Store, TurnEvent, Usage};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT_PAYLOAD: &str = "<script>window.pwned=1</script>";
const IMG_PAYLOAD: &str = "<img src=x onerror=\"window.pwned=1\">";

/// A child process killed when the test ends, passing or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on an ephemeral port and a headless Chromium session through it.
struct Browser {
    client: Client,
    _driver: Reaped,
}

impl Browser {
    async fn start() -> Browser {
        let found = Command::new("chromedriver")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "chromedriver is not installed: run `make browsers` (or `apt-get install -y chromium chromium-driver`)"
        );
        let port = free_port();
        let driver = Reaped(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _driver: driver,
                    }
                }
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The text of the first `css` element, waiting for one (a page being replaced by the next
    /// one answers "stale element" meanwhile).
    async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match found {
                Ok(text) => return text,
                Err(e) if Instant::now() > deadline => panic!("no {css} on the page: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until `css`'s text contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pwned(&self) -> serde_json::Value {
        self.client
            .execute("return typeof window.pwned;", vec![])
            .await
            .unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// A state dir with stored jobs and `runner serve` on it.
struct Served {
    dir: tempfile::TempDir,
    base: String,
    token: String,
    _server: Reaped,
}

impl Served {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn store(&self) -> Store {
        Store::open(&self.state_dir()).unwrap()
    }

    fn start(setup: impl FnOnce(&mut Store)) -> Served {
        Served::start_on("127.0.0.1:0", setup)
    }

    fn start_on(listen: &str, setup: impl FnOnce(&mut Store)) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        {
            let mut store = Store::open(&state).unwrap();
            setup(&mut store);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["serve", "--listen", listen, "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let server = Reaped(child);
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("runner serve ended before it listened")
                .unwrap();
            if let Some(addr) = line.strip_prefix("runner: listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(state.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Served {
            dir,
            base: format!("http://{addr}"),
            token,
            _server: server,
        }
    }
}

fn submit(store: &mut Store, yaml: &str) -> JobId {
    let spec = runner::job::parse_str(yaml, Path::new("job.yaml")).unwrap();
    store
        .submit(&[NewJob { spec, source: None }])
        .unwrap()
        .remove(0)
}

fn plain_job(store: &mut Store, name: &str, group: &str) -> JobId {
    submit(
        store,
        &format!("name: {name}\nimage: runner/base\ngroup: {group}\ncommand: [echo, hi]\n"),
    )
}

/// A running agent job whose stored turn, edits and transcript carry script payloads.
fn hostile_agent(store: &mut Store) -> JobId {
    let id = submit(
        store,
        "name: hostile-agent\nimage: runner/aider:0.86.2\ntask: fix the bug\nrepo: https://example.com/r.git\n",
    );
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert!(store.mark_running(&id, 1).unwrap());
    let turn = TurnEvent {
        turn: 1,
        max_turns: 8,
        action: "instruct".into(),
        argument: "fix it".into(),
        progress: "reading the code".into(),
        thought: format!("the agent said {SCRIPT_PAYLOAD}"),
        ended: format!("Aider printed {IMG_PAYLOAD}"),
        edits: vec![format!("{IMG_PAYLOAD}.rs")],
        ..Default::default()
    };
    store.add_turn_event(&id, 1, &turn).unwrap();
    let rows = vec![
        (
            runner::state::now_rfc3339(),
            "out".to_string(),
            SCRIPT_PAYLOAD.to_string(),
        ),
        (
            runner::state::now_rfc3339(),
            "out".to_string(),
            IMG_PAYLOAD.to_string(),
        ),
    ];
    store.add_transcript(&id, 1, &rows, 100).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_list_shows_every_job_with_its_state_and_new_jobs_appear_live() {
    let served = Served::start(|store| {
        for (name, outcome) in [
            ("unit-tests", Outcome::Succeeded),
            (
                "lint",
                Outcome::Failed {
                    reason: Reason::ExitCode,
                    exit_code: Some(3),
                    detail: "exited with code 3".into(),
                },
            ),
        ] {
            let id = plain_job(store, name, "ci");
            store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
            store.mark_running(&id, 1).unwrap();
            store.finish_attempt(&id, 1, &outcome, 1).unwrap();
        }
        plain_job(store, "build-docs", "docs");
        let agent = hostile_agent(store);
        let usage = Usage {
            requests: 3,
            prompt_tokens: 5200,
            completion_tokens: 800,
            cost_usd: 0.0123,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        store
            .add_usage(&agent, 1, Role::Agent, "gpt-4o-mini", &usage)
            .unwrap();
    });
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/?token={}", served.base, served.token))
        .await
        .unwrap();
    let table = browser.wait_text("#jobs tbody", "build-docs").await;
    assert!(table.contains("hostile-agent"), "{table}");
    assert!(
        table.contains("running") && table.contains("queued"),
        "{table}"
    );
    assert_eq!(
        browser.text("#totals [data-activity=working] .count").await,
        "1"
    );
    // The login cookie replaced the token in the address.
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains("token="), "{url}");
    browser.wait_text("#live", "live").await;

    let late = plain_job(&mut served.store(), "arrived-later", "docs");
    let table = browser.wait_text("#jobs tbody", "arrived-later").await;
    assert!(table.contains(late.as_str()), "{table}");
    // The totals are the server's sums over every matching job, sent at most once a second.
    assert_eq!(
        browser
            .wait_text("#totals [data-activity=waiting] .count", "2")
            .await,
        "2"
    );
    assert_eq!(browser.text("#total-jobs").await, "5");
    browser.screenshot("jobs.png").await;
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_an_agent_printed_renders_as_inert_text_on_its_job_page() {
    let mut id = None;
    let served = Served::start(|store| id = Some(hostile_agent(store)));
    let id = id.unwrap();
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/jobs/{id}?token={}", served.base, served.token))
        .await
        .unwrap();
    let transcript = browser.wait_text("#transcript", SCRIPT_PAYLOAD).await;
    assert!(transcript.contains(IMG_PAYLOAD), "{transcript}");
    let timeline = browser.text("#timeline").await;
    assert!(timeline.contains(SCRIPT_PAYLOAD), "{timeline}");
    assert!(
        timeline.contains(&format!("{IMG_PAYLOAD}.rs")),
        "{timeline}"
    );
    assert_eq!(browser.pwned().await, "undefined");

    // Lines stored while the page is open arrive live, and are text too.
    browser.wait_text("#live", "live").await;
    let mut store = served.store();
    let late = format!("late {IMG_PAYLOAD} {SCRIPT_PAYLOAD}");
    store
        .add_transcript(
            &id,
            1,
            &[(runner::state::now_rfc3339(), "out".into(), late.clone())],
            200,
        )
        .unwrap();
    let turn = TurnEvent {
        turn: 2,
        max_turns: 8,
        action: "run".into(),
        thought: format!("second {SCRIPT_PAYLOAD}"),
        ..Default::default()
    };
    store.add_turn_event(&id, 1, &turn).unwrap();
    browser.wait_text("#transcript", &late).await;
    browser
        .wait_text("#timeline", &format!("second {SCRIPT_PAYLOAD}"))
        .await;
    assert_eq!(browser.pwned().await, "undefined");
    let images = browser
        .client
        .find_all(Locator::Css("main img"))
        .await
        .unwrap();
    assert!(images.is_empty(), "an agent's <img> became an element");
    browser.screenshot("job.png").await;
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_without_the_token_are_refused() {
    let mut id = None;
    let served = Served::start(|store| id = Some(plain_job(store, "secret-job", "default")));
    let id = id.unwrap();
    let browser = Browser::start().await;
    for path in ["/".to_string(), format!("/jobs/{id}"), "/new".into()] {
        browser
            .client
            .goto(&format!("{}{path}", served.base))
            .await
            .unwrap();
        let body = browser.text("body").await;
        assert!(
            !body.contains("secret-job"),
            "{path} showed the job: {body}"
        );
        assert!(body.contains("token"), "{path} did not say why: {body}");
    }
    browser
        .client
        .goto(&format!("{}/?token=wrong", served.base))
        .await
        .unwrap();
    let body = browser.text("body").await;
    assert!(!body.contains("secret-job"), "{body}");
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_submitted_from_the_new_page_is_queued_and_cancelled_from_its_page() {
    let served = Served::start(|_| {});
    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{}/new?token={}", served.base, served.token))
        .await
        .unwrap();
    let text = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#new-text"))
        .await
        .unwrap();
    // A bad file first: the server's located error is shown next to the text.
    text.send_keys("name: from-the-page\nimage: runner/base\ncommand: [echo, hi]\ntimeout: soon\n")
        .await
        .unwrap();
    c.find(Locator::Css("#new-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let errors = browser.wait_text("#new-errors", "timeout").await;
    assert!(errors.contains("4:"), "the error names no line: {errors}");
    assert_eq!(served.store().list(true).unwrap().len(), 0);

    text.clear().await.unwrap();
    text.send_keys("name: from-the-page\nimage: runner/base\ncommand: [sleep, '60']\n")
        .await
        .unwrap();
    c.find(Locator::Css("#new-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("main h1", "from-the-page").await;
    let jobs = served.store().list(true).unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with(jobs[0].id.as_str()));
    browser.wait_text("#job-state", "queued").await;
    browser.wait_text("#live", "live").await;

    c.find(Locator::Css("#controls button[data-action=cancel]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    browser.wait_text("#job-state", "cancelled").await;
    let job = served.store().job(&jobs[0].id).unwrap();
    assert_eq!(job.state.as_str(), "cancelled");
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_short_form_writes_a_job_file_with_every_value_quoted_and_submitting_it_queues_the_job()
{
    let served = Served::start(|_| {});
    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{}/new?token={}", served.base, served.token))
        .await
        .unwrap();
    let field = |id: &'static str| async move {
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(id))
            .await
            .unwrap()
    };
    // Values YAML would read as something else unquoted: a colon, a comment, a flow mapping,
    // a list item, quotes, markup, a number, a YAML word.
    let typed_task = "Fix \"this\": the #1 bug\n- {not: a list}\n<b>no</b> & 'yes'";
    let verify = "python3 -c 'print(\"ok: #1\")' && true";
    for (id, value) in [
        ("#f-name", "form-agent"),
        ("#f-repo", "https://example.com/org/app.git"),
        ("#f-task", typed_task),
        ("#f-model", "openai/gpt-4o-mini"),
        ("#f-manager", "no"),
        ("#f-tokens", "5000"),
        ("#f-usd", "0.5"),
        ("#f-verify", verify),
    ] {
        field(id).await.send_keys(value).await.unwrap();
    }
    // Characters YAML reads as line breaks, which a person cannot type on a keyboard, set as
    // pasted text would be.
    let tail = " next\u{2028}line\u{85}end";
    c.execute(
        "const t = document.getElementById('f-task'); t.value += arguments[0];\
         t.dispatchEvent(new Event('input', {bubbles: true}));",
        vec![serde_json::json!(tail)],
    )
    .await
    .unwrap();
    let yaml = c
        .execute("return document.getElementById('new-text').value;", vec![])
        .await
        .unwrap();
    let yaml = yaml.as_str().unwrap().to_string();
    assert!(yaml.contains("name: \"form-agent\"\n"), "{yaml}");
    assert!(yaml.contains("manager: { model: \"no\" }"), "{yaml}");
    assert!(
        yaml.contains("budget: { tokens: 5000, usd: 0.5 }"),
        "{yaml}"
    );
    assert!(
        yaml.contains("\\u2028") && yaml.contains("\\u0085"),
        "{yaml}"
    );
    browser.screenshot("new.png").await;

    c.find(Locator::Css("#new-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("main h1", "form-agent").await;
    browser.wait_text("#job-state", "queued").await;
    let jobs = served.store().list(true).unwrap();
    assert_eq!(jobs.len(), 1);
    let spec = &jobs[0].spec;
    assert_eq!(
        spec.kind,
        runner::job::JobKind::Task {
            task: format!("{typed_task}{tail}")
        }
    );
    assert_eq!(
        spec.repo,
        Some(runner::job::RepoSource::Url(
            "https://example.com/org/app.git".into()
        ))
    );
    assert_eq!(spec.agent.model, "openai/gpt-4o-mini");
    assert_eq!(spec.manager.model, "no");
    assert_eq!(spec.budget.tokens, Some(5000));
    assert_eq!(spec.budget.usd, Some(0.5));
    assert_eq!(
        spec.verify
            .as_ref()
            .and_then(|v| v.last())
            .map(String::as_str),
        Some(verify)
    );

    // A value the server refuses is shown located in the written file, which stays editable.
    c.goto(&format!("{}/new", served.base)).await.unwrap();
    field("#f-name").await.send_keys("Bad Name").await.unwrap();
    field("#f-task").await.send_keys("anything").await.unwrap();
    c.find(Locator::Css("#new-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let errors = browser.wait_text("#new-errors", "not a valid name").await;
    assert!(errors.contains("2:"), "the error names no line: {errors}");
    assert_eq!(served.store().list(true).unwrap().len(), 1);
    browser.client.close().await.unwrap();
}

/// `runner daemon --listen 127.0.0.1:0` on `env`'s state dir: the process, its base URL and
/// the token.
fn daemon_with_listen(
    env: &common::Env,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> (Reaped, String, String) {
    let mut child = env
        .cmd()
        .args(["daemon", "--listen", "127.0.0.1:0", "--stop-grace", "2s"])
        .args(extra)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let daemon = Reaped(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("runner daemon ended before it listened")
            .unwrap();
        if let Some(addr) = line.strip_prefix("runner: listening on ") {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(env.state.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    (daemon, format!("http://{addr}"), token)
}

/// Types `yaml` into `/new` and submits it; returns once the new job's page is open.
async fn submit_from_page(browser: &Browser, base: &str, yaml: &str, name: &str) {
    let c = &browser.client;
    c.goto(&format!("{base}/new")).await.unwrap();
    let text = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#new-text"))
        .await
        .unwrap();
    text.send_keys(yaml).await.unwrap();
    c.find(Locator::Css("#new-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("main h1", name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_with_listen_runs_jobs_submitted_from_the_page_and_shows_them_live() {
    let env = common::Env::new();
    let (_daemon, base, token) = daemon_with_listen(&env, &[], &[]);
    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{base}/?token={token}")).await.unwrap();

    // A job printing markup runs to the end; its page follows it live.
    let script = format!("sleep 2; echo '{SCRIPT_PAYLOAD}'; echo '{IMG_PAYLOAD}'");
    let yaml = common::sh_job("printer", &script, "");
    submit_from_page(&browser, &base, &yaml, "printer").await;
    browser.wait_text("#live", "live").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if browser.text("#job-state").await.contains("succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "printer never succeeded on its page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = browser.text("#events").await;
    assert!(
        events.contains("running"),
        "the events missed running: {events}"
    );
    assert!(!browser.text("#job-started").await.is_empty());
    assert!(!browser.text("#job-finished").await.is_empty());
    let detail = browser.text("#job-detail").await;
    assert!(
        !detail.contains("runner-"),
        "a container as the job's detail: {detail}"
    );
    c.refresh().await.unwrap();
    let output = browser.wait_text("pre.output", SCRIPT_PAYLOAD).await;
    assert!(output.contains(IMG_PAYLOAD), "{output}");
    assert_eq!(browser.pwned().await, "undefined");

    // Another one is cancelled from its page while it runs.
    let yaml = common::sh_job("sleeper", "sleep 300", "");
    submit_from_page(&browser, &base, &yaml, "sleeper").await;
    browser.wait_text("#live", "live").await;
    browser.wait_text("#job-state", "running").await;
    c.find(Locator::Css("#controls button[data-action=cancel]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if browser.text("#job-state").await.contains("cancelled") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleeper never became cancelled on its page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.goto(&format!("{base}/")).await.unwrap();
    let table = browser.wait_text("#jobs tbody", "sleeper").await;
    assert!(
        table.contains("cancelled") && table.contains("succeeded"),
        "{table}"
    );
    browser.client.close().await.unwrap();
}

/// Waits until `css`'s text contains `needle`, for up to `within`.
async fn wait_long(browser: &Browser, css: &str, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = browser.text(css).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {needle:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real Aider image against a scripted upstream, under `runner daemon --listen`.
#[test]
fn an_agent_submitted_from_the_page_shows_its_turns_live_and_takes_a_message_sent_from_it() {
    let env = common::Env::new();
    common::make_repo(&env.dir.path().join("repo"));
    let llm = scripted::ScriptedLlm::start(
        vec![
            scripted::answer("run", "sleep 6"),
            scripted::answer("finish", "greet added as the operator asked"),
        ],
        vec![scripted::create_file(
            "greet.py",
            "def greet(name):\n    return f\"Hello, {name}!\"\n",
        )],
    );
    let jobs_from = env.dir.path().display().to_string();
    let (_daemon, base, token) = daemon_with_listen(
        &env,
        &["--jobs-from", &jobs_from],
        &[
            ("OPENAI_BASE_URL", &llm.url),
            ("OPENAI_API_KEY", "upstream-key"),
        ],
    );
    let yaml = "name: talk\ntask: Add a function greet(name) to greet.py.\nrepo: ./repo\nagent: { model: openai/mock }\nmanager: { mode: llm, model: manager-mock, max_turns: 5 }\ntimeout: 5m\n";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        let c = &browser.client;
        c.goto(&format!("{base}/?token={token}")).await.unwrap();
        submit_from_page(&browser, &base, yaml, "talk").await;
        browser.wait_text("#live", "live").await;
        // Aider is running the first turn's command: the transcript shows it live.
        wait_long(&browser, "#transcript", "sleep 6", Duration::from_secs(120)).await;
        let message = "Operator here: <b>create greet.py now</b>";
        c.find(Locator::Css("#send-text"))
            .await
            .unwrap()
            .send_keys(message)
            .await
            .unwrap();
        c.find(Locator::Css("#send-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = browser.wait_text("#control-status", "stored").await;
        assert!(!status.is_empty());
        wait_long(&browser, "#timeline", "turn 1/5", Duration::from_secs(60)).await;
        // The message arrives live on the timeline (between the turns), in the events and in
        // the transcript.
        wait_long(
            &browser,
            "#timeline li.message",
            message,
            Duration::from_secs(60),
        )
        .await;
        wait_long(&browser, "#events", message, Duration::from_secs(60)).await;
        wait_long(&browser, "#transcript", message, Duration::from_secs(60)).await;
        wait_long(
            &browser,
            "#job-state",
            "succeeded",
            Duration::from_secs(120),
        )
        .await;
        let timeline = browser.text("#timeline").await;
        assert!(timeline.contains("finish"), "{timeline}");
        // The page as the server renders it shows the message on the timeline too.
        c.refresh().await.unwrap();
        let timeline = browser.wait_text("#timeline li.message", message).await;
        assert!(timeline.contains("message"), "{timeline}");
        assert!(
            c.find_all(Locator::Css("main b")).await.unwrap().is_empty(),
            "the message's markup became an element"
        );
        browser.screenshot("agent.png").await;
        browser.client.close().await.unwrap();
    });
}

/// This host's address on its default route (no packet is sent: a UDP socket only picks it).
fn non_loopback_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("10.255.255.255:1").unwrap();
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "this host has no address but loopback");
    ip
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_on_another_address_are_refused_without_the_token_and_served_with_it() {
    let served = Served::start_on("0.0.0.0:0", |store| {
        plain_job(store, "secret-job", "default");
    });
    let port = served.base.rsplit(':').next().unwrap().to_string();
    let base = format!("http://{}:{port}", non_loopback_ip());
    let browser = Browser::start().await;
    browser.client.goto(&format!("{base}/")).await.unwrap();
    let body = browser.text("body").await;
    assert!(!body.contains("secret-job"), "{body}");
    assert!(body.contains("token"), "{body}");
    browser
        .client
        .goto(&format!("{base}/?token={}", served.token))
        .await
        .unwrap();
    browser.wait_text("#jobs tbody", "secret-job").await;
    browser.client.close().await.unwrap();
}
