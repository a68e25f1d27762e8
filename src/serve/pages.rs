//! Mission Control's pages: server-rendered HTML (maud escapes every value it interpolates),
//! one stylesheet and one small script, both embedded in the binary and served from
//! `/assets/` (the Content-Security-Policy allows no inline script or style).
//!
//! - `/` lists jobs (filters `state`, `group`, `name` as query parameters);
//! - `/jobs/{id}` shows one job: spec, attempts, turn timeline, events, transcript, verify
//!   output, result patch as a diff, artifacts, usage; controls post to the API;
//! - `/new` takes a job file and posts it to `POST /api/v1/jobs`, showing the located errors.
//!
//! Live updates come from two server-sent event streams the pages open with `EventSource`:
//! `/live/jobs` (a `job` event with a job's list row whenever one of its events is stored) and
//! `/live/jobs/{id}` (an `event` event per stored event, the `runner events --json` shape, and a
//! `transcript` event per transcript line). The script builds DOM nodes with `textContent` only:
//! everything an agent or a job printed is text, never markup.

use crate::state::{parse_rfc3339, JobId, JobState};
use crate::store::{EventBody, EventRecord, ExportEvent, JobRecord, JobTally, SharedStore, Store};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// How often the live streams look for new rows in the store (server side; the browser does
/// not poll).
const LIVE_TICK: Duration = Duration::from_millis(250);

/// The most rows the job list renders (the newest; totals count every job that matches).
const LIST_ROWS: usize = 500;

/// The most of one file (log, verify output, patch) a page shows.
const FILE_LIMIT: u64 = 512 * 1024;

impl axum::extract::FromRef<super::ServeState> for SharedStore {
    fn from_ref(state: &super::ServeState) -> SharedStore {
        state.store.clone()
    }
}

/// The pages' routes, for the server's router to merge (its auth layer covers them).
pub fn routes() -> Router<super::ServeState> {
    Router::new()
        .route("/", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/new", get(new_page))
        .route("/live/jobs", get(live_jobs))
        .route("/live/jobs/{id}", get(live_job))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// A page's error: plain text, the store's message.
fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Html(layout("Error", "error", html! { p.error { (message) } }).0),
    )
        .into_response()
}

fn layout(title: &str, page: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · runner" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body data-page=(page) {
                header.top {
                    a.brand href="/" { "runner" span.sub { "mission control" } }
                    nav { a href="/" { "Jobs" } a href="/new" { "New job" } }
                    span #live.live title="live updates" { "offline" }
                }
                main { (body) }
            }
        }
    }
}

/// What a person should read from a job's state at a glance.
fn activity(state: JobState, paused: bool) -> &'static str {
    match state {
        JobState::Queued | JobState::Starting => "waiting",
        JobState::Running if paused => "paused",
        JobState::Running => "working",
        JobState::Succeeded => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn badge(state: JobState, paused: bool) -> Markup {
    let what = activity(state, paused);
    html! { span class={ "badge " (what) } data-state=(state.as_str()) { (state.as_str()) @if paused { " · paused" } } }
}

/// Seconds between two RFC 3339 times (`to` defaults to now).
fn seconds_between(from: &str, to: Option<&str>) -> Option<i64> {
    let from = parse_rfc3339(from)?;
    let to = match to {
        Some(t) => parse_rfc3339(t)?,
        None => time::OffsetDateTime::now_utc(),
    };
    Some((to - from).whole_seconds().max(0))
}

/// `42s`, `3m 05s`, `2h 10m`, `3d 4h`.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A job's row in the list, as JSON (what `/live/jobs` sends and the script renders).
fn row_json(job: &JobRecord, tally: &JobTally, paused: bool) -> Value {
    let age = seconds_between(&job.submitted_at, None);
    let duration = job
        .started_at
        .as_deref()
        .and_then(|s| seconds_between(s, job.finished_at.as_deref()));
    json!({
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "activity": activity(job.state, paused),
        "paused": paused,
        "reason": match (job.reason, job.exit_code) {
            (Some(r), Some(code)) => format!("{r} {code}"),
            (Some(r), None) => r.to_string(),
            _ => String::new(),
        },
        "detail": job.detail.clone().unwrap_or_default(),
        "group": job.spec.group,
        "age": age.map(human_duration).unwrap_or_default(),
        "duration": duration.map(human_duration).unwrap_or_default(),
        "turns": tally.turns,
        "tokens": tally.tokens,
        "cost": format!("${:.4}", tally.cost_usd),
    })
}

#[derive(Debug, Default, Deserialize)]
struct ListFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    name: String,
}

impl ListFilter {
    fn keeps(&self, job: &JobRecord) -> bool {
        (self.state.is_empty() || job.state.as_str() == self.state)
            && (self.group.is_empty() || job.spec.group == self.group)
            && (self.name.is_empty() || job.name.contains(&self.name))
    }
}

struct ListData {
    jobs: Vec<JobRecord>,
    tallies: HashMap<String, JobTally>,
    paused: HashMap<String, bool>,
    groups: Vec<String>,
}

fn list_data(store: &Store) -> crate::store::Result<ListData> {
    let mut jobs = store.list(true)?;
    jobs.reverse();
    let tallies = store.job_tallies()?;
    let mut paused = HashMap::new();
    for job in jobs.iter().filter(|j| j.state == JobState::Running) {
        paused.insert(job.id.to_string(), store.paused(&job.id)?);
    }
    let mut groups: Vec<String> = jobs.iter().map(|j| j.spec.group.clone()).collect();
    groups.sort();
    groups.dedup();
    Ok(ListData {
        jobs,
        tallies,
        paused,
        groups,
    })
}

async fn jobs_page(State(store): State<SharedStore>, Query(filter): Query<ListFilter>) -> Response {
    match store.call(|s| list_data(s)).await {
        Ok(data) => Html(render_jobs(&data, &filter).0).into_response(),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn render_jobs(data: &ListData, filter: &ListFilter) -> Markup {
    let shown: Vec<&JobRecord> = data.jobs.iter().filter(|j| filter.keeps(j)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut total = JobTally::default();
    for job in &shown {
        let paused = data.paused.get(job.id.as_str()).copied().unwrap_or(false);
        *counts.entry(activity(job.state, paused)).or_default() += 1;
        if let Some(t) = data.tallies.get(job.id.as_str()) {
            total.turns += t.turns;
            total.tokens += t.tokens;
            total.cost_usd += t.cost_usd;
        }
    }
    let body = html! {
        section.totals #totals {
            @for what in ["working", "waiting", "paused", "done", "failed", "cancelled"] {
                div class={ "total " (what) } data-activity=(what) {
                    span.count { (counts.get(what).copied().unwrap_or(0)) }
                    span.label { (what) }
                }
            }
            div.total.usage {
                span.count #total-jobs { (shown.len()) } span.label { "jobs" }
            }
            div.total.usage {
                span.count { (total.tokens) } span.label { "tokens" }
            }
            div.total.usage {
                span.count { (format!("${:.4}", total.cost_usd)) } span.label { "cost" }
            }
        }
        form.filters method="get" action="/" {
            label { "State "
                select name="state" {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[filter.state == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Group "
                select name="group" {
                    option value="" { "any" }
                    @for g in &data.groups {
                        option value=(g) selected[&filter.group == g] { (g) }
                    }
                }
            }
            label { "Name " input type="search" name="name" value=(filter.name) placeholder="contains"; }
            button type="submit" { "Filter" }
        }
        table.jobs #jobs data-filter-state=(filter.state) data-filter-group=(filter.group) data-filter-name=(filter.name) {
            thead { tr {
                th { "Job" } th { "State" } th { "Reason" } th { "Group" } th { "Age" }
                th { "Duration" } th.num { "Turns" } th.num { "Tokens" } th.num { "Cost" }
            } }
            tbody {
                @for job in shown.iter().take(LIST_ROWS) {
                    @let tally = data.tallies.get(job.id.as_str()).copied().unwrap_or_default();
                    @let paused = data.paused.get(job.id.as_str()).copied().unwrap_or(false);
                    (job_row(&row_json(job, &tally, paused)))
                }
            }
        }
        @if shown.len() > LIST_ROWS {
            p.empty #more-jobs { "Showing the newest " (LIST_ROWS) " of " (shown.len()) " jobs; filter by state, group or name to see others." }
        }
        @if shown.is_empty() {
            p.empty #no-jobs { "No jobs yet. " a href="/new" { "Submit one." } }
        }
    };
    layout("Jobs", "jobs", body)
}

/// One row of the jobs table from its JSON (the script builds the same cells).
fn job_row(row: &Value) -> Markup {
    let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
    let id = s("id");
    html! {
        tr data-id=(id) data-activity=(s("activity")) {
            td.name { a href={ "/jobs/" (id) } { (s("name")) } br; small.id { (id) } }
            td.state { span class={ "badge " (s("activity")) } { (s("state")) @if row["paused"] == true { " · paused" } } }
            td.reason title=(s("detail")) { (s("reason")) }
            td.group { (s("group")) }
            td.age { (s("age")) }
            td.duration { (s("duration")) }
            td.num.turns { (row["turns"]) }
            td.num.tokens { (row["tokens"]) }
            td.num.cost { (s("cost")) }
        }
    }
}

/// Everything the job page shows, read in one store call.
struct JobData {
    job: JobRecord,
    paused: bool,
    attempts: Vec<crate::store::AttemptRecord>,
    usage: crate::store::RoleUsage,
    attempt_usage: Vec<(u32, crate::store::RoleUsage)>,
    artifacts: Vec<crate::store::ArtifactRecord>,
    events: Vec<EventRecord>,
    transcript: Vec<(u32, String, String, String)>,
}

fn job_data(store: &Store, query: &str) -> crate::store::Result<JobData> {
    let id = store.resolve(query)?;
    let job = store.job(&id)?;
    let attempts = store.attempts(&id)?;
    let mut transcript = Vec::new();
    let mut attempt_usage = Vec::new();
    for a in &attempts {
        for (at, dir, text) in store.transcript(&id, a.n)? {
            transcript.push((a.n, at, dir, text));
        }
        attempt_usage.push((a.n, store.attempt_usage(&id, a.n)?));
    }
    Ok(JobData {
        paused: store.paused(&id)?,
        usage: store.job_usage(&id)?,
        artifacts: store.artifacts(&id)?,
        events: store.events(&id)?,
        attempts,
        attempt_usage,
        transcript,
        job,
    })
}

/// The start of a file the runner wrote (log, verify output, patch), lossily as UTF-8.
fn read_limited(path: &str) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(FILE_LIMIT).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

async fn job_page(State(store): State<SharedStore>, Path(id): Path<String>) -> Response {
    let data = match store.call(move |s| job_data(s, &id)).await {
        Ok(d) => d,
        Err(e @ crate::store::StoreError::NotFound(_)) => {
            return failure(StatusCode::NOT_FOUND, e);
        }
        Err(e) => return failure(StatusCode::BAD_REQUEST, e),
    };
    // Files are read off the async threads.
    let files = {
        let artifacts = data.artifacts.clone();
        let patches: Vec<String> = data
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Export(ExportEvent::Patch { path }) => Some(path.clone()),
                _ => None,
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            let texts: Vec<(String, String, Option<String>)> = artifacts
                .iter()
                .filter(|a| a.kind == "log" || a.kind == "verify")
                .map(|a| (a.kind.clone(), a.path.clone(), read_limited(&a.path)))
                .collect();
            let patch = patches.last().and_then(|p| read_limited(p));
            (texts, patch)
        })
        .await
        .unwrap_or_default()
    };
    Html(render_job(&data, &files.0, files.1.as_deref()).0).into_response()
}

fn render_job(
    data: &JobData,
    files: &[(String, String, Option<String>)],
    patch: Option<&str>,
) -> Markup {
    let job = &data.job;
    let id = job.id.as_str();
    let spec = serde_json::to_string_pretty(&job.spec).unwrap_or_default();
    let active = !job.state.is_terminal();
    let duration = job
        .started_at
        .as_deref()
        .and_then(|s| seconds_between(s, job.finished_at.as_deref()));
    let turns: Vec<(u32, &crate::store::TurnEvent, &str)> = data
        .events
        .iter()
        .filter_map(|e| match (&e.body, e.attempt) {
            (EventBody::Turn(t), Some(n)) => Some((n, t, e.at.as_str())),
            _ => None,
        })
        .collect();
    let last_seq = data.events.last().map(|e| e.seq).unwrap_or(0);
    let body = html! {
        section.jobhead #job data-id=(id) data-seq=(last_seq) data-transcript=(data.transcript.len()) {
            h1 { (job.name) " " span #job-state { (badge(job.state, data.paused)) } }
            dl.facts {
                dt { "id" } dd { code { (id) } }
                dt { "group" } dd { (job.spec.group) }
                dt { "reason" } dd #job-reason { (job.reason.map(|r| r.to_string()).unwrap_or_default()) }
                dt { "detail" } dd #job-detail { (job.detail.clone().unwrap_or_default()) }
                dt { "submitted" } dd { (job.submitted_at) }
                dt { "started" } dd #job-started { (job.started_at.clone().unwrap_or_default()) }
                dt { "finished" } dd #job-finished { (job.finished_at.clone().unwrap_or_default()) }
                dt { "duration" } dd { (duration.map(human_duration).unwrap_or_default()) }
                @if let Some(src) = &job.source { dt { "source" } dd { code { (src) } } }
            }
            div.controls #controls data-id=(id) {
                button.danger data-action="cancel" disabled[!active] { "Cancel" }
                button data-action="pause" disabled[!active] { "Pause" }
                button data-action="resume" disabled[!active] { "Resume" }
                form #send-form {
                    input #send-text type="text" name="message" placeholder="Message to the agent" disabled[!active];
                    button type="submit" disabled[!active] { "Send" }
                }
                span #control-status.status role="status" {}
            }
        }
        section {
            h2 { "Turns" }
            ol.timeline #timeline {
                @for (n, t, at) in &turns { (turn_item(*n, t, at)) }
            }
            @if turns.is_empty() { p.empty #no-turns { "No turns yet." } }
        }
        section {
            h2 { "Events" }
            ul.events #events {
                @for e in data.events.iter().filter(|e| !matches!(e.body, EventBody::Turn(_))) {
                    li { span.at { (e.at) } " " span class={ "kind " (e.body.kind()) } { (e.body.kind()) } " " span.what { (crate::cli::events::describe(&e.body)) } }
                }
            }
        }
        section {
            h2 { "Transcript" }
            pre.transcript #transcript {
                @for (n, at, dir, text) in &data.transcript {
                    span class={ "line " (dir) } title={ "attempt " (n) " · " (at) } { (text) "\n" }
                }
            }
        }
        @for (kind, path, text) in files {
            section {
                h2 { @if kind == "verify" { "Verify output" } @else { "Output" } " " small { code { (path) } } }
                pre.output { (text.clone().unwrap_or_else(|| "(file no longer there)".into())) }
            }
        }
        @if let Some(patch) = patch {
            section {
                h2 { "Result patch" }
                pre.diff { @for line in patch.lines() { span class=(diff_class(line)) { (line) "\n" } } }
            }
        }
        section {
            h2 { "Usage" }
            table.usage {
                thead { tr { th { "scope" } th { "role" } th.num { "requests" } th.num { "prompt" } th.num { "completion" } th.num { "cost" } } }
                tbody {
                    @for (scope, u) in std::iter::once(("job".to_string(), &data.usage)).chain(data.attempt_usage.iter().map(|(n, u)| (format!("attempt {n}"), u))) {
                        @for (role, r) in [("manager", &u.manager), ("agent", &u.agent)] {
                            tr { td { (scope) } td { (role) } td.num { (r.requests) } td.num { (r.prompt_tokens) } td.num { (r.completion_tokens) } td.num { (format!("${:.4}", r.cost_usd)) } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Attempts" }
            table.attempts {
                thead { tr { th { "n" } th { "state" } th { "reason" } th { "detail" } th { "container" } th { "started" } th { "finished" } } }
                tbody {
                    @for a in &data.attempts {
                        tr { td { (a.n) } td { (badge(a.state, false)) } td { (a.reason.map(|r| r.to_string()).unwrap_or_default()) } td { (a.detail.clone().unwrap_or_default()) } td { code { (a.container) } } td { (a.started_at) } td { (a.finished_at.clone().unwrap_or_default()) } }
                    }
                }
            }
        }
        section {
            h2 { "Artifacts" }
            ul.artifacts {
                @for (i, a) in data.artifacts.iter().enumerate() {
                    li {
                        a href={ "/api/v1/jobs/" (id) "/artifacts/" (i) } download { (a.kind) }
                        " · attempt " (a.attempt) " · " code { (a.path) }
                    }
                }
            }
        }
        section {
            h2 { "Spec" }
            pre.spec { (spec) }
        }
    };
    layout(&job.name, "job", body)
}

fn diff_class(line: &str) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") {
        "file"
    } else if line.starts_with("@@") {
        "hunk"
    } else if line.starts_with('+') {
        "add"
    } else if line.starts_with('-') {
        "del"
    } else {
        "ctx"
    }
}

fn turn_item(n: u32, t: &crate::store::TurnEvent, at: &str) -> Markup {
    html! {
        li.turn data-action=(t.action) {
            div.turnhead {
                span.num { "turn " (t.turn) "/" (t.max_turns) }
                span class={ "action " (t.action) } { (t.action) }
                span.at { "attempt " (n) " · " (at) }
            }
            @if !t.progress.is_empty() { p.progress { (t.progress) } }
            @if !t.argument.is_empty() { p.argument { (t.argument) } }
            @if !t.thought.is_empty() { p.thought { (t.thought) } }
            @if !t.ended.is_empty() { p.ended { "→ " (t.ended) } }
            p.meta {
                (t.tokens()) " tokens · " (format!("${:.4}", t.cost_usd)) " · "
                (t.files_changed) " files changed · " (t.commits) " commits"
                @if !t.edits.is_empty() { " · edited: " (t.edits.join(", ")) }
            }
        }
    }
}

async fn new_page() -> Html<String> {
    let body = html! {
        h1 { "New job" }
        p { "Paste or upload a job file (YAML, as for " code { "runner submit" } "). The server validates it like "
            code { "runner validate" } " and queues it." }
        form #new-form {
            input #new-file type="file" accept=".yaml,.yml,text/yaml";
            textarea #new-text name="job" rows="18" spellcheck="false" placeholder="name: hello\nimage: runner/base\ncommand: [echo, hello]" {}
            ul.errors #new-errors {}
            button type="submit" { "Submit" }
        }
    };
    Html(layout("New job", "new", body).0)
}

/// `/live/jobs`: a `job` event with the list row of every job an event is stored for.
async fn live_jobs(State(store): State<SharedStore>) -> Response {
    let start = store.call(|s| s.last_event_seq()).await.unwrap_or(0);
    let stream = futures_util::stream::unfold((store, start), |(store, mut after)| async move {
        loop {
            let from = after;
            let rows = store
                .call(move |s| {
                    let events = s.events_since(from, 500)?;
                    let last = events.last().map(|e| e.seq).unwrap_or(from);
                    let mut ids: Vec<JobId> = events.into_iter().map(|e| e.job_id).collect();
                    ids.dedup();
                    let tallies = if ids.is_empty() {
                        HashMap::new()
                    } else {
                        s.job_tallies()?
                    };
                    let mut rows = Vec::new();
                    for id in ids {
                        let job = s.job(&id)?;
                        let paused = job.state == JobState::Running && s.paused(&id)?;
                        let tally = tallies.get(id.as_str()).copied().unwrap_or_default();
                        rows.push(row_json(&job, &tally, paused));
                    }
                    Ok((last, rows))
                })
                .await;
            match rows {
                Ok((last, rows)) if !rows.is_empty() => {
                    after = last;
                    let events: Vec<Result<Event, Infallible>> = rows
                        .iter()
                        .map(|r| Ok(Event::default().event("job").data(r.to_string())))
                        .collect();
                    return Some((futures_util::stream::iter(events), (store, after)));
                }
                Ok((last, _)) => after = last,
                Err(_) => {}
            }
            tokio::time::sleep(LIVE_TICK).await;
        }
    });
    use futures_util::StreamExt;
    Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct LiveFrom {
    /// The last event seq the page shows.
    #[serde(default)]
    seq: i64,
    /// How many transcript lines the page shows.
    #[serde(default)]
    transcript: usize,
}

/// `/live/jobs/{id}`: `event` events (the `runner events --json` shape) after `seq`, and
/// `transcript` events (`{attempt, at, direction, text}`) after the first `transcript` lines.
async fn live_job(
    State(store): State<SharedStore>,
    Path(id): Path<String>,
    Query(from): Query<LiveFrom>,
) -> Response {
    let id = match store.call(move |s| s.resolve(&id)).await {
        Ok(id) => id,
        Err(e) => return failure(StatusCode::NOT_FOUND, e),
    };
    let state = (store, id, from.seq, from.transcript);
    let stream = futures_util::stream::unfold(
        state,
        |(store, id, mut seq, mut lines)| async move {
            loop {
                let (job, after, seen) = (id.clone(), seq, lines);
                let found = store
                .call(move |s| {
                    let events = s.events_after(&job, after)?;
                    let mut transcript = Vec::new();
                    for a in s.attempts(&job)? {
                        for (at, direction, text) in s.transcript(&job, a.n)? {
                            transcript.push(json!({"attempt": a.n, "at": at, "direction": direction, "text": text}));
                        }
                    }
                    Ok((events, transcript.into_iter().skip(seen).collect::<Vec<_>>()))
                })
                .await;
                if let Ok((events, transcript)) = found {
                    if !events.is_empty() || !transcript.is_empty() {
                        seq = events.last().map(|e| e.seq).unwrap_or(seq);
                        lines += transcript.len();
                        let mut out: Vec<Result<Event, Infallible>> = Vec::new();
                        for e in &events {
                            let data = serde_json::to_string(e).unwrap_or_default();
                            out.push(Ok(Event::default().event("event").data(data)));
                        }
                        for t in &transcript {
                            out.push(Ok(Event::default().event("transcript").data(t.to_string())));
                        }
                        return Some((futures_util::stream::iter(out), (store, id, seq, lines)));
                    }
                }
                tokio::time::sleep(LIVE_TICK).await;
            }
        },
    );
    use futures_util::StreamExt;
    Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_sensible_units() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m 05s");
        assert_eq!(human_duration(7800), "2h 10m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn a_turn_thought_carrying_markup_is_escaped_text() {
        let turn = crate::store::TurnEvent {
            turn: 1,
            max_turns: 5,
            action: "instruct".into(),
            thought: "<script>window.pwned=1</script>".into(),
            edits: vec!["<img src=x onerror=alert(1)>.rs".into()],
            ..Default::default()
        };
        let html = turn_item(1, &turn, "now").into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"),
            "{html}"
        );
    }
}
