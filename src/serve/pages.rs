//! Mission Control's pages: server-rendered HTML (maud escapes every value it interpolates),
//! one stylesheet and one small script, both embedded in the binary and served from
//! `/assets/` (the Content-Security-Policy allows no inline script or style).
//!
//! - `/` lists jobs (filters `state`, `group`, `name` as query parameters);
//! - `/jobs/{id}` shows one job: spec, attempts, turn timeline, events, transcript, verify
//!   output, result patch as a diff, artifacts, usage; controls post to the API;
//! - `/new` takes a job file, pasted, uploaded or written by its short form (an agent job, every
//!   value quoted by the script), and posts it to `POST /api/v1/jobs`, showing the located errors.
//!
//! Live updates come from two server-sent event streams the pages open with `EventSource`:
//! `/live/jobs` (a `job` event with a job's list row whenever one of its events is stored) and
//! `/live/jobs/{id}` (an `event` event per stored event, the `runner events --json` shape, and a
//! `transcript` event per transcript line). The script builds DOM nodes with `textContent` only:
//! everything an agent or a job printed is text, never markup.

use super::live;
use crate::state::{parse_rfc3339, JobId, JobState};
use crate::store::{
    EventBody, EventRecord, ExportEvent, JobFilter, JobListing, JobRecord, JobTally, SharedStore,
    Store, TranscriptRecord,
};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

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
    /// The store's filter (an unknown state filters nothing).
    fn to_store(&self) -> JobFilter {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        JobFilter {
            state: self.state.parse().ok(),
            group: some(&self.group),
            name: some(&self.name),
        }
    }
}

/// The totals above the list (`/live/jobs` sends them again as `totals` events): matching jobs
/// by activity, and their count, tokens and cost.
fn totals_json(listing: &JobListing) -> Value {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for (state, n) in &listing.by_state {
        *counts.entry(activity(*state, false)).or_default() += n;
    }
    if listing.paused_running > 0 {
        *counts.entry("working").or_default() -= listing.paused_running;
        *counts.entry("paused").or_default() += listing.paused_running;
    }
    json!({
        "counts": counts,
        "jobs": listing.matched(),
        "tokens": listing.tokens,
        "cost": format!("${:.4}", listing.cost_usd),
    })
}

async fn jobs_page(State(store): State<SharedStore>, Query(filter): Query<ListFilter>) -> Response {
    let query = filter.to_store();
    match store.call(move |s| s.job_listing(&query, LIST_ROWS)).await {
        Ok(listing) => Html(render_jobs(&listing, &filter).0).into_response(),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn render_jobs(listing: &JobListing, filter: &ListFilter) -> Markup {
    let totals = totals_json(listing);
    let body = html! {
        section.totals #totals {
            @for what in ["working", "waiting", "paused", "done", "failed", "cancelled"] {
                div class={ "total " (what) } data-activity=(what) {
                    span.count { (totals["counts"][what].as_u64().unwrap_or(0)) }
                    span.label { (what) }
                }
            }
            div.total.usage {
                span.count #total-jobs { (listing.matched()) } span.label { "jobs" }
            }
            div.total.usage {
                span.count #total-tokens { (listing.tokens) } span.label { "tokens" }
            }
            div.total.usage {
                span.count #total-cost { (totals["cost"].as_str().unwrap_or_default()) } span.label { "cost" }
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
                    @for g in &listing.groups {
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
                @for job in &listing.jobs {
                    @let tally = listing.tallies.get(job.id.as_str()).copied().unwrap_or_default();
                    @let paused = listing.paused.iter().any(|p| p == job.id.as_str());
                    (job_row(&row_json(job, &tally, paused)))
                }
            }
        }
        @if listing.matched() > listing.jobs.len() as u64 {
            p.empty #more-jobs { "Showing the newest " (listing.jobs.len()) " of " (listing.matched()) " jobs; filter by state, group or name to see others." }
        }
        @if listing.jobs.is_empty() {
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
    /// Usage over every attempt by role and model.
    usage_by_model: Vec<crate::store::ModelUsage>,
    artifacts: Vec<crate::store::ArtifactRecord>,
    events: Vec<EventRecord>,
    transcript: Vec<TranscriptRecord>,
}

fn job_data(store: &Store, query: &str) -> crate::store::Result<JobData> {
    let id = store.resolve(query)?;
    let job = store.job(&id)?;
    let attempts = store.attempts(&id)?;
    let transcript = store.transcript_after(&id, 0)?;
    let mut attempt_usage = Vec::new();
    for a in &attempts {
        attempt_usage.push((a.n, store.attempt_usage(&id, a.n)?));
    }
    Ok(JobData {
        paused: store.paused(&id)?,
        usage: store.job_usage(&id)?,
        usage_by_model: store.job_usage_by_model(&id)?,
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
    // The timeline: the manager's turns and the messages people sent, in the order stored.
    let timeline: Vec<&EventRecord> = data
        .events
        .iter()
        .filter(|e| e.attempt.is_some() && on_timeline(&e.body))
        .collect();
    let last_seq = data.events.last().map(|e| e.seq).unwrap_or(0);
    let body = html! {
        section.jobhead #job data-id=(id) data-seq=(last_seq) data-transcript=(data.transcript.last().map_or(0, |t| t.seq)) {
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
                @for e in &timeline { (timeline_item(e)) }
            }
            @if timeline.is_empty() { p.empty #no-turns { "No turns yet." } }
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
                @for t in &data.transcript {
                    span class={ "line " (t.direction) } title={ "attempt " (t.attempt) " · " (t.at) } { (t.text) "\n" }
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
            @if !data.usage_by_model.is_empty() {
                h3 { "By model" }
                table.usage.by-model {
                    thead { tr { th { "role" } th { "model" } th.num { "requests" } th.num { "prompt" } th.num { "completion" } th.num { "cost" } } }
                    tbody {
                        @for m in &data.usage_by_model {
                            tr {
                                td { (m.role.as_str()) }
                                td.model { @if m.model.is_empty() { em { "unknown" } } @else { code { (m.model) } } }
                                td.num { (m.usage.requests) } td.num { (m.usage.prompt_tokens) } td.num { (m.usage.completion_tokens) }
                                td.num { (format!("${:.4}", m.usage.cost_usd)) @if m.usage.unpriced_requests > 0 { " (" (m.usage.unpriced_requests) " unpriced)" } }
                            }
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

/// Whether an event is an item of the job page's timeline.
fn on_timeline(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::Turn(_) | EventBody::Message { .. } | EventBody::MessageDropped { .. }
    )
}

/// One item of the timeline: a turn, or a message a person sent (typed into Aider, or dropped
/// because its attempt ended first).
fn timeline_item(e: &EventRecord) -> Markup {
    let n = e.attempt.unwrap_or(0);
    match &e.body {
        EventBody::Turn(t) => turn_item(n, t, &e.at),
        EventBody::Message { text } => message_item(n, text, &e.at, false),
        EventBody::MessageDropped { text } => message_item(n, text, &e.at, true),
        _ => html! {},
    }
}

fn message_item(n: u32, text: &str, at: &str, dropped: bool) -> Markup {
    html! {
        li.message data-dropped=(dropped) {
            div.turnhead {
                span.num { @if dropped { "message dropped" } @else { "message" } }
                span.at { "attempt " (n) " · " (at) }
            }
            p.said { (text) }
        }
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
        div.newjob {
            section.shortform {
                h2 { "Short form" }
                p.hint { "An agent job. What you type here writes the job file on the right; edit it there if you like." }
                form #short-form autocomplete="off" {
                    label { span { "Name" } input #f-name type="text" name="name" placeholder="add-greeting" pattern="[a-z0-9]([a-z0-9]|-){0,62}" title="1–63 lowercase letters, digits and dashes"; }
                    label { span { "Repository" } input #f-repo type="text" name="repo" placeholder="https://github.com/org/app.git or a path"; }
                    label { span { "Task" } textarea #f-task name="task" rows="5" placeholder="Add a function greet(name) to greet.py and a test for it." {} }
                    div.pair {
                        label { span { "Agent model" } input #f-model type="text" name="model" placeholder="openai/gpt-4o-mini"; }
                        label { span { "Manager model" } input #f-manager type="text" name="manager" placeholder="gpt-4o-mini"; }
                    }
                    div.pair {
                        label { span { "Budget (tokens)" } input #f-tokens type="number" name="tokens" min="1" step="1" placeholder="unlimited"; }
                        label { span { "Budget (USD)" } input #f-usd type="number" name="usd" min="0" step="0.01" placeholder="unlimited"; }
                    }
                    label { span { "Verify command" } input #f-verify type="text" name="verify" placeholder="python3 -m pytest -q"; }
                }
            }
            section.jobfile {
                h2 { "Job file" }
                p.hint { "Paste or upload a job file (YAML, as for " code { "runner submit" } "), or fill the short form. The server validates it like "
                    code { "runner validate" } " and queues it." }
                form #new-form {
                    input #new-file type="file" accept=".yaml,.yml,text/yaml";
                    textarea #new-text name="job" rows="18" spellcheck="false" placeholder="name: hello\nimage: runner/base\ncommand: [echo, hello]" {}
                    ul.errors #new-errors {}
                    button.primary type="submit" { "Submit" }
                }
            }
        }
    };
    Html(layout("New job", "new", body).0)
}

/// The least time between two `totals` events of one `/live/jobs` stream (they sum over every
/// matching job).
const TOTALS_EVERY: Duration = Duration::from_secs(1);

/// `/live/jobs`: a `job` event with the list row of every job an event is stored for, and at
/// most every [`TOTALS_EVERY`] a `totals` event with the list's totals under the page's filter
/// (its query parameters).
async fn live_jobs(
    State(state): State<super::ServeState>,
    Query(filter): Query<ListFilter>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut batches = state.hub.subscribe();
    let store = state.store.clone();
    let filter = filter.to_store();
    tokio::spawn(async move {
        // Totals are due after a change, but not sooner than TOTALS_EVERY after the last ones.
        let mut totals_due: Option<tokio::time::Instant> = None;
        let mut last_totals = tokio::time::Instant::now();
        loop {
            let wake = totals_due.unwrap_or_else(|| tokio::time::Instant::now() + live::KEEP_ALIVE);
            let ids: Vec<JobId> = tokio::select! {
                r = batches.recv() => match r {
                    Ok(batch) => batch.events.iter().map(|e| e.job_id.clone()).collect(),
                    // Fell behind: the totals say what changed; rows come with the next events.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if totals_due.is_none() {
                        if tx.send(": keep-alive\n\n".into()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Vec::new()
                }
                _ = tx.closed() => return,
            };
            let mut ids = ids;
            ids.sort();
            ids.dedup();
            let now = tokio::time::Instant::now();
            if !ids.is_empty() || totals_due.is_none() {
                totals_due.get_or_insert(now.max(last_totals + TOTALS_EVERY));
            }
            let with_totals = totals_due.is_some_and(|due| due <= now);
            if ids.is_empty() && !with_totals {
                continue;
            }
            let f = filter.clone();
            let read = store
                .call(move |s| {
                    let mut rows = Vec::new();
                    for id in &ids {
                        let job = s.job(id)?;
                        let paused = job.state == JobState::Running && s.paused(id)?;
                        let tally = s.job_tally(id)?;
                        rows.push(row_json(&job, &tally, paused));
                    }
                    let totals = if with_totals {
                        Some(totals_json(&s.job_listing(&f, 0)?))
                    } else {
                        None
                    };
                    Ok((rows, totals))
                })
                .await;
            let Ok((rows, totals)) = read else { continue };
            let mut chunk = String::new();
            for row in &rows {
                chunk.push_str(&live::sse(Some("job"), None, &row.to_string()));
            }
            if let Some(t) = totals {
                chunk.push_str(&live::sse(Some("totals"), None, &t.to_string()));
                totals_due = None;
                last_totals = tokio::time::Instant::now();
            }
            if !chunk.is_empty() && tx.send(chunk.into()).await.is_err() {
                return;
            }
        }
    });
    live::response(rx)
}

#[derive(Debug, Default, Deserialize)]
struct LiveFrom {
    /// The last event seq the page shows.
    #[serde(default)]
    seq: i64,
    /// The last transcript seq the page shows.
    #[serde(default)]
    transcript: i64,
}

/// `/live/jobs/{id}`: `event` events (the `runner events --json` shape) after `seq`, and
/// `transcript` events (`{seq, attempt, at, direction, text}`) after the transcript row `seq`
/// `transcript`; an `end` event once the job has ended. Each message's `id` is
/// `<event seq>.<transcript seq>`, so a reconnecting browser (`Last-Event-ID`) resumes both.
async fn live_job(
    State(state): State<super::ServeState>,
    Path(id): Path<String>,
    Query(from): Query<LiveFrom>,
    headers: axum::http::HeaderMap,
) -> Response {
    let id = match state.store.call(move |s| s.resolve(&id)).await {
        Ok(id) => id,
        Err(e) => return failure(StatusCode::NOT_FOUND, e),
    };
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('.'))
        .and_then(|(e, t)| Some((e.parse().ok()?, t.parse().ok()?)));
    let (events, transcript) = resumed.unwrap_or((from.seq, from.transcript));
    let cursor = live::Cursor {
        events,
        transcript: Some(transcript),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // The message id carries both cursors; `follow_job` moves them in order.
    let mut at = (events, transcript);
    tokio::spawn(live::follow_job(
        state.store.clone(),
        state.hub.clone(),
        id,
        cursor,
        tx,
        move |item| match item {
            live::Item::Event(e) => {
                at.0 = e.seq;
                let data = serde_json::to_string(e).unwrap_or_default();
                live::sse(Some("event"), Some(&format!("{}.{}", at.0, at.1)), &data)
            }
            live::Item::Transcript(t) => {
                at.1 = t.seq;
                let data = serde_json::to_string(t).unwrap_or_default();
                live::sse(
                    Some("transcript"),
                    Some(&format!("{}.{}", at.0, at.1)),
                    &data,
                )
            }
            live::Item::End => live::sse(Some("end"), None, "{}"),
        },
    ));
    live::response(rx)
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
    fn the_job_page_lists_usage_per_role_and_model_with_model_names_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "priced");
        let call = crate::store::Usage {
            requests: 1,
            prompt_tokens: 100,
            completion_tokens: 10,
            cost_usd: 0.5,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        let hostile = "<img src=x onerror=alert(1)>";
        for (role, model) in [
            (crate::store::Role::Agent, "gpt-4o"),
            (crate::store::Role::Agent, hostile),
            (crate::store::Role::Manager, ""),
        ] {
            store.add_usage(&id, 1, role, model, &call).unwrap();
        }
        let data = job_data(&store, id.as_str()).unwrap();
        let html = render_job(&data, &[], None).into_string();
        let table = html
            .split("<table class=\"usage by-model\">")
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap_or_else(|| panic!("no by-model table in {html}"));
        let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
        assert_eq!(rows.len(), 3, "{table}");
        // By role, then model name ('<' sorts before letters).
        assert!(
            rows[0].contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{table}"
        );
        assert!(
            rows[1].contains("agent") && rows[1].contains("gpt-4o"),
            "{table}"
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(
            rows[2].contains("manager") && rows[2].contains("unknown"),
            "{table}"
        );
        assert!(rows[2].contains("$0.5000"), "{table}");
    }

    #[test]
    fn a_message_on_the_timeline_is_escaped_text_and_says_whether_it_was_dropped() {
        let event = |body| EventRecord {
            seq: 1,
            job_id: JobId::new(),
            attempt: Some(1),
            at: "now".into(),
            body,
        };
        let sent = timeline_item(&event(EventBody::Message {
            text: "<b onmouseover=x>take over</b>".into(),
        }))
        .into_string();
        assert!(!sent.contains("<b"), "{sent}");
        assert!(
            sent.contains("&lt;b onmouseover=x&gt;take over&lt;/b&gt;"),
            "{sent}"
        );
        assert!(sent.contains("data-dropped=\"false\""), "{sent}");
        let dropped = timeline_item(&event(EventBody::MessageDropped {
            text: "too late".into(),
        }))
        .into_string();
        assert!(dropped.contains("message dropped"), "{dropped}");
        assert!(on_timeline(&EventBody::Message {
            text: String::new()
        }));
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
