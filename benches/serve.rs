//! Mission control's live updates and job list (`cargo bench --bench serve`; bench/run.sh runs it
//! as part 8). Each figure comes from a real `runner serve` process (this build's binary) on its
//! own state dir, reached over loopback with the token; events and jobs are written through the
//! store, as the scheduler writes them.
//!
//! 1. Latency from an event being stored (the store call returned) to its arrival at an SSE
//!    client of `GET /api/v1/jobs/{id}/events`: 50 clients over 5 jobs, 200 events at 20 a
//!    second, each reaching 10 clients; baseline: the same with one client. Goal: p99 <= 100 ms.
//! 2. Response time of the jobs page (`GET /`) with 10,000 jobs in the store (a third cancelled,
//!    a fifth with metered usage and a turn); baseline: the same page with 100 such jobs. Goal:
//!    <= 200 ms.
//!
//! Prints the figures, then one summary line beginning with "bench: serve".

use runner::store::{EventBody, NewJob, Role, Store, TurnEvent, Usage};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const WATCHED_JOBS: usize = 5;
const EVENTS: usize = 200;
const EVENT_GAP: Duration = Duration::from_millis(50);
const BIG: usize = 10_000;
const SMALL: usize = 100;
const PAGE_RUNS: usize = 30;

/// A `runner serve` on a state dir, stopped when dropped.
struct Server {
    child: Child,
    addr: String,
    token: String,
}

impl Server {
    fn start(state: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("--state-dir")
            .arg(state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("runner serve ended before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("runner: listening on ") {
                break a.trim().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(state.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Server { child, addr, token }
    }

    fn connect(&self, path: &str, accept: &str) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
            self.addr, self.token
        )
        .unwrap();
        s
    }

    /// Seconds to the whole answer of `GET path`, checking it is a 200.
    fn get_time(&self, path: &str) -> f64 {
        let t = Instant::now();
        let mut s = self.connect(path, "text/html");
        let mut body = Vec::new();
        s.read_to_end(&mut body).unwrap();
        let took = t.elapsed().as_secs_f64();
        assert!(
            body.starts_with(b"HTTP/1.1 200"),
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        took
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(name: &str) -> runner::job::JobSpec {
    let yaml = format!("name: {name}\nimage: runner/base:bookworm\ncommand: [\"true\"]\n");
    runner::job::parse_untrusted(&yaml, None).expect("a valid job")
}

fn submit(store: &mut Store, n: usize, prefix: &str) -> Vec<runner::state::JobId> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            spec: spec(&format!("{prefix}-{i}")),
            source: None,
        })
        .collect();
    store.submit(&jobs).unwrap()
}

/// Nearest-rank percentile of sorted `v` (seconds) in milliseconds.
fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
    v[i.min(v.len() - 1)] * 1000.0
}

/// Stores `EVENTS` message events round-robin over `jobs` and measures, for every client, the
/// time from each store call's return to the event's arrival. `clients` SSE clients watch the
/// jobs round-robin. Returns the latencies in seconds, sorted.
fn sse_round(
    server: &Server,
    store: &mut Store,
    jobs: &[runner::state::JobId],
    clients: usize,
) -> Vec<f64> {
    let stored: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; EVENTS]));
    let arrivals: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    // Each round's events carry its own tag, so events of an earlier round (the backlog a new
    // stream sends first) are not counted.
    let tag = format!(
        "r{}c{clients}-",
        std::process::id() ^ Instant::now().elapsed().subsec_nanos()
    );
    for c in 0..clients {
        let job = jobs[c % jobs.len()].to_string();
        let s = server.connect(&format!("/api/v1/jobs/{job}/events"), "text/event-stream");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (arrivals, stop, ready, tag) =
            (arrivals.clone(), stop.clone(), ready.clone(), tag.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("HTTP/1.1 200"), "SSE answer: {line}");
            ready.wait();
            while !stop.load(Ordering::Relaxed) {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        let now = Instant::now();
                        if let Some(i) = line.find(&tag) {
                            let digits: String = line[i + tag.len()..]
                                .chars()
                                .take_while(|c| c.is_ascii_digit())
                                .collect();
                            if let Ok(k) = digits.parse::<usize>() {
                                arrivals.lock().unwrap().push((k, now));
                            }
                        }
                    }
                    Err(_) => continue, // read timeout: look at `stop`
                }
            }
        }));
    }
    ready.wait();
    std::thread::sleep(Duration::from_millis(500));
    for k in 0..EVENTS {
        let job = &jobs[k % jobs.len()];
        store
            .add_event(
                job,
                1,
                &EventBody::Message {
                    text: format!("{tag}{k}"),
                },
            )
            .unwrap();
        stored.lock().unwrap()[k] = Some(Instant::now());
        std::thread::sleep(EVENT_GAP);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let stored = stored.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let expected = EVENTS * clients / jobs.len();
    assert_eq!(
        arrivals.len(),
        expected,
        "every client gets every event of its job once"
    );
    let mut lat: Vec<f64> = arrivals
        .iter()
        .map(|(k, at)| {
            at.saturating_duration_since(stored[*k].expect("stored"))
                .as_secs_f64()
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

/// A store of `n` jobs: a third cancelled, a fifth with usage and a turn.
fn fill(store: &mut Store, n: usize) {
    let ids = submit(store, n, "job");
    let usage = Usage {
        requests: 3,
        prompt_tokens: 1200,
        completion_tokens: 300,
        cost_usd: 0.012,
        unpriced_requests: 0,
        estimated_requests: 0,
    };
    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            store.cancel(id).unwrap();
        }
        if i % 5 == 0 {
            store
                .add_usage(id, 1, Role::Agent, "gpt-4o-mini", &usage)
                .unwrap();
            store.add_turn_event(id, 1, &TurnEvent::default()).unwrap();
        }
    }
}

fn page_times(server: &Server) -> Vec<f64> {
    for _ in 0..3 {
        server.get_time("/");
    }
    let mut v: Vec<f64> = (0..PAGE_RUNS).map(|_| server.get_time("/")).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let tmp = tempfile::tempdir().unwrap();

    let live_dir = tmp.path().join("live");
    let mut store = Store::open(&live_dir).unwrap();
    let jobs = submit(&mut store, WATCHED_JOBS, "watched");
    let server = Server::start(&live_dir);
    let one = sse_round(&server, &mut store, &jobs[..1], 1);
    let many = sse_round(&server, &mut store, &jobs, CLIENTS);
    drop(server);
    let ratio = pct(&many, 99.0) / pct(&one, 99.0).max(0.001);
    eprintln!(
        "  SSE, 1 client:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} deliveries)",
        pct(&one, 50.0),
        pct(&one, 99.0),
        pct(&one, 100.0),
        one.len()
    );
    eprintln!(
        "  SSE, {CLIENTS} clients:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} deliveries)",
        pct(&many, 50.0),
        pct(&many, 99.0),
        pct(&many, 100.0),
        many.len()
    );

    let mut pages = Vec::new();
    for n in [SMALL, BIG] {
        let dir = tmp.path().join(format!("jobs-{n}"));
        let mut store = Store::open(&dir).unwrap();
        let t = Instant::now();
        fill(&mut store, n);
        eprintln!(
            "  filled a store with {n} jobs in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let server = Server::start(&dir);
        let times = page_times(&server);
        eprintln!(
            "  jobs page, {n} jobs: median {:.1} ms, p95 {:.1} ms",
            pct(&times, 50.0),
            pct(&times, 95.0)
        );
        pages.push(times);
    }
    let (small, big) = (&pages[0], &pages[1]);
    println!(
        "bench: serve: SSE p99 {:.1} ms with {CLIENTS} clients (goal <= 100) vs {:.1} ms with 1 ({:.2}x); \
         jobs page {:.1} ms median, p95 {:.1} ms with {BIG} jobs (goal <= 200) vs {:.1} ms with {SMALL} ({:.2}x)",
        pct(&many, 99.0),
        pct(&one, 99.0),
        ratio,
        pct(big, 50.0),
        pct(big, 95.0),
        pct(small, 50.0),
        pct(big, 50.0) / pct(small, 50.0).max(0.001)
    );
}
