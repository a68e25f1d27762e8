//! Bytes sent to the manager LLM per turn over a scripted 30-turn session (`cargo bench --bench
//! manager_bytes`; bench/run.sh runs it). Deterministic: no Docker, no network, no clock.
//!
//! Each turn's Aider output is built from the real Aider 0.86.2 recordings in
//! tests/fixtures/aider/*.txt, repeated and varied (file names, commit ids, token counts) to
//! 2–20 KB a turn. The turn context is driven exactly as the manager loop does it (src/attempt/drive.rs):
//! turn k is asked with the output that followed turn k-1 (the start-up output on turn 1), then the
//! step is remembered. The request is the one the manager sends (model, messages, temperature,
//! response_format), serialised.
//!
//! Baseline: the old tool's scheme, the same request with the system prompt, the task and the whole
//! output accumulated since the start of the session, on every turn.
//!
//! Prints a per-turn table, then one summary line beginning with "bench: manager".

use runner::agent::protocol::{messages, HistoryItem, TurnContext, SYSTEM_PROMPT};
use runner::job::ManagerAction;
use serde_json::{json, Value};
use std::path::Path;

const TURNS: u32 = 30;
const MIN_OUTPUT: usize = 2 << 10;
const MAX_OUTPUT: usize = 20 << 10;
const MODEL: &str = "gpt-4o-mini";

const TASK: &str = "Add rate limiting to the HTTP client in src/client: a token bucket per host \
(configurable rate and burst, defaults 10/s and 20), applied in Client::send before each request, \
with the wait time logged at debug level. Requests that would wait longer than the request timeout \
fail at once with a RateLimited error that names the host and the wait. Keep the public API \
unchanged apart from the new ClientConfig fields rate_per_host and burst_per_host. Add unit tests \
for the bucket (refill, burst, per-host isolation) and an integration test against the local test \
server in tests/server.py showing that 50 requests to one host take about 4 seconds. All existing \
tests must keep passing (python3 -m pytest -q).";

/// A tiny deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The recorded outputs: the start-up header (through the first prompt) and the bodies after it.
struct Recordings {
    header: String,
    bodies: Vec<String>,
}

fn load_recordings() -> Recordings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aider");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no recorded Aider outputs in {}",
        dir.display()
    );
    let mut header = None;
    let mut bodies = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        // The first prompt line ends the start-up output.
        let Some(at) = text.find("\n> ").or_else(|| text.find("\ndiff> ")) else {
            continue;
        };
        let end = text[at + 1..]
            .find('\n')
            .map_or(text.len(), |n| at + 1 + n + 1);
        if header.is_none() && path.ends_with("create-file.txt") {
            header = Some(text[..at + 3].to_string());
        }
        let body = text[end..].trim_end();
        // The final prompt goes; each turn ends in exactly one.
        let body = body
            .strip_suffix("diff>")
            .or_else(|| body.strip_suffix('>'))
            .unwrap_or(body)
            .trim_end();
        if !body.is_empty() {
            bodies.push(body.to_string());
        }
    }
    Recordings {
        header: header.expect("tests/fixtures/aider/create-file.txt is missing"),
        bodies,
    }
}

/// One recorded body, varied so that no two chunks are identical.
fn vary(body: &str, turn: u32, chunk: usize, rng: &mut Lcg) -> String {
    let name = format!("client_{turn}_{chunk}");
    let text = body
        .replace("hello.py", &format!("src/client/{name}.py"))
        .replace("hello", &name)
        .replace("greet", &name);
    // Fresh commit ids and token counts.
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Commit ") {
            let msg = rest.split_once(' ').map_or("", |(_, m)| m);
            out.push_str(&format!("Commit {:07x} {msg}\n", rng.below(1 << 28)));
        } else if line.starts_with("Tokens: ") {
            let sent = 2.0 + rng.below(300) as f64 / 10.0;
            let received = 20 + rng.below(900);
            out.push_str(&format!(
                "Tokens: {sent:.1}k sent, {received} received. Cost: ${:.4} message, ${:.4} session.\n",
                sent * 0.00015,
                sent * 0.00015 * f64::from(turn)
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Aider's output after one step: recorded bodies, varied, up to the turn's size, then the prompt.
fn turn_output(rec: &Recordings, turn: u32, rng: &mut Lcg) -> String {
    let target = MIN_OUTPUT + rng.below((MAX_OUTPUT - MIN_OUTPUT) as u64) as usize;
    let mut out = String::new();
    let mut chunk = 0;
    while out.len() < target {
        let body = &rec.bodies[rng.below(rec.bodies.len() as u64) as usize];
        out.push('\n');
        out.push_str(&vary(body, turn, chunk, rng));
        chunk += 1;
    }
    out.push_str(&format!("\nsrc/client/client_{turn}_0.py\n> "));
    out
}

/// The manager's step on turn k (a plausible mix of actions).
fn step(turn: u32) -> (ManagerAction, String, String) {
    let file = format!("src/client/client_{turn}_0.py");
    match turn % 5 {
        1 | 3 => (
            ManagerAction::Instruct,
            format!(
                "In {file}, implement the token bucket refill so that tokens accrue at rate_per_host \
                 per second up to burst_per_host, and make Client::send wait on it; add a unit test \
                 for refill after an idle period."
            ),
            format!("edited {file} (1 commit)"),
        ),
        2 => (
            ManagerAction::Test,
            "python3 -m pytest -q".to_string(),
            "no edits".to_string(),
        ),
        4 => (
            ManagerAction::Run,
            "python3 -m pytest -q tests/test_rate_limit.py -x".to_string(),
            "no edits".to_string(),
        ),
        _ => (
            ManagerAction::Add,
            format!("{file} tests/test_rate_limit.py"),
            "no edits".to_string(),
        ),
    }
}

/// The request as the manager sends it (src/agent/manager.rs).
fn request(messages: Vec<Value>) -> usize {
    let body = json!({
        "model": MODEL,
        "messages": messages,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    });
    serde_json::to_string(&body).expect("serialisable").len()
}

/// The old tool's request: the whole output so far, every turn.
fn baseline_request(all_output: &str) -> usize {
    let user = format!(
        "Task:\n{TASK}\n\nAider's output so far:\n```\n{all_output}\n```\nAnswer with one JSON object."
    );
    request(vec![
        json!({"role": "system", "content": SYSTEM_PROMPT}),
        json!({"role": "user", "content": user}),
    ])
}

fn kb(bytes: usize) -> String {
    let k = bytes as f64 / 1024.0;
    if k >= 1024.0 {
        format!("{:.2} MB", k / 1024.0)
    } else {
        format!("{k:.1} KB")
    }
}

fn main() {
    let rec = load_recordings();
    let mut rng = Lcg(0x005e_ed0f_a1de);
    let mut ctx = TurnContext {
        task: TASK.to_string(),
        max_turns: TURNS,
        ..Default::default()
    };
    // Turn 1 sees Aider's start-up output, as in the driver.
    ctx.new_output = rec.header.clone();
    let mut all_output = rec.header.clone();
    let mut files = std::collections::BTreeSet::new();
    let (mut runner_total, mut baseline_total) = (0usize, 0usize);
    let mut rows = Vec::new();
    let (mut out_min, mut out_max, mut out_total) = (usize::MAX, 0usize, 0usize);
    println!("turn  new output   runner request  baseline request");
    for turn in 1..=TURNS {
        ctx.turn = turn;
        let runner = request(messages(&ctx));
        let baseline = baseline_request(&all_output);
        runner_total += runner;
        baseline_total += baseline;
        println!(
            "{turn:>4}  {:>10}  {:>14}  {:>16}",
            kb(ctx.new_output.len()),
            kb(runner),
            kb(baseline)
        );
        rows.push((turn, runner, baseline));
        if turn > 1 {
            out_min = out_min.min(ctx.new_output.len());
            out_max = out_max.max(ctx.new_output.len());
            out_total += ctx.new_output.len();
        }
        if turn == TURNS {
            break;
        }
        // The step is taken; Aider answers; the driver stores the new output and remembers.
        let (action, argument, result) = step(turn);
        if action == ManagerAction::Instruct {
            files.insert(format!("src/client/client_{turn}_0.py"));
        }
        let output = turn_output(&rec, turn, &mut rng);
        all_output.push_str(&output);
        ctx.new_output = output;
        ctx.files_changed = files.iter().cloned().collect();
        ctx.remember(HistoryItem {
            turn,
            action,
            argument,
            result,
        });
    }
    let at = |t: u32| rows.iter().find(|r| r.0 == t).copied().expect("turn");
    let (_, r1, b1) = at(1);
    let (_, r10, b10) = at(10);
    let (_, r30, b30) = at(TURNS);
    println!(
        "bench: manager request bytes over {TURNS} turns (Aider output {}–{} per turn after \
         start-up, {} in all over turns 2–{TURNS}): turn 1 {} vs {} baseline, turn 10 {} vs {}, turn 30 {} vs {} \
         (ratio {:.3}); total {} vs {} (ratio {:.3})",
        kb(out_min),
        kb(out_max),
        kb(out_total),
        kb(r1),
        kb(b1),
        kb(r10),
        kb(b10),
        kb(r30),
        kb(b30),
        r30 as f64 / b30 as f64,
        kb(runner_total),
        kb(baseline_total),
        runner_total as f64 / baseline_total as f64
    );
}
