//! GitHub Actions integration for `runner run` and `runner submit --wait`: a Markdown summary of
//! the jobs appended to `$GITHUB_STEP_SUMMARY`, and an `::error` workflow command per job that
//! did not succeed when `GITHUB_ACTIONS=true` (docs/github-actions.md).
//!
//! Everything a job controls (its detail, its log, the file name it was given as) is hostile
//! input here: in the summary it is written as text that neither Markdown nor HTML can read as
//! markup, and in a workflow command it is escaped so that it cannot end the command or start
//! another one.

use crate::state::{JobId, JobState};
use crate::store::{JobRecord, SharedStore, StoreError};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::Path;

/// Lines of a failed job's log shown in the summary.
const LOG_TAIL_LINES: usize = 40;
/// Bytes read from the end of a failed job's log for those lines.
const LOG_TAIL_BYTES: u64 = 8 << 10;
/// GitHub refuses a step summary over 1 MiB; past this size, failed jobs are listed without
/// their log.
const SUMMARY_SOFT_LIMIT: usize = 768 << 10;

/// One job as the summary and the annotations show it.
#[derive(Clone, Debug)]
pub struct JobLine {
    pub record: JobRecord,
    pub turns: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    /// The end of the latest attempt's log (failed jobs only).
    pub log_tail: Option<String>,
}

/// Writes the step summary and prints the annotations for `ids`, as the environment asks: does
/// nothing outside GitHub Actions. Annotations go to stdout, the stream GitHub documents for
/// workflow commands, unless stdout carries `--json` output: then to stderr, which the Actions
/// runner reads for workflow commands as well. A summary that cannot be written is a warning,
/// not a failure of the jobs.
pub async fn report(
    state_dir: &Path,
    store: &SharedStore,
    ids: &[JobId],
    json_on_stdout: bool,
) -> Result<(), StoreError> {
    let summary_file = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty());
    let annotate = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    if summary_file.is_none() && !annotate {
        return Ok(());
    }
    let lines = collect(state_dir, store, ids).await?;
    let workspace = std::env::var_os("GITHUB_WORKSPACE").map(std::path::PathBuf::from);
    let workspace = workspace.as_deref();
    if let Some(file) = summary_file {
        let text = summary(&lines, workspace);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "runner: cannot append the step summary to {}: {e}",
                Path::new(&file).display()
            );
        }
    }
    if annotate {
        let text: String = lines
            .iter()
            .filter_map(|l| annotation(&l.record, workspace))
            .collect();
        if json_on_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
    Ok(())
}

/// The jobs with their tallies, and the log tails of those that did not succeed.
async fn collect(
    state_dir: &Path,
    store: &SharedStore,
    ids: &[JobId],
) -> Result<Vec<JobLine>, StoreError> {
    let wanted = ids.to_vec();
    let mut lines = store
        .call(move |s| {
            s.jobs(&wanted)?
                .into_iter()
                .map(|record| {
                    let tally = s.job_tally(&record.id)?;
                    Ok(JobLine {
                        record,
                        turns: tally.turns,
                        tokens: tally.tokens,
                        cost_usd: tally.cost_usd,
                        log_tail: None,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    let logs = state_dir.join("logs");
    for line in &mut lines {
        let job = &line.record;
        if job.state != JobState::Succeeded && job.attempts > 0 {
            let path = crate::attempt::log_path(&logs, job.id.as_str(), job.attempts);
            line.log_tail = log_tail(&path);
        }
    }
    Ok(lines)
}

/// The last [`LOG_TAIL_LINES`] lines of a log file (read from its last [`LOG_TAIL_BYTES`]).
fn log_tail(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end_matches('\n');
    let lines: Vec<&str> = text.split('\n').collect();
    // A read that starts mid-file starts mid-line: drop that partial first line.
    let skip_partial = usize::from(len > LOG_TAIL_BYTES && lines.len() > 1);
    let keep = &lines[skip_partial.max(lines.len().saturating_sub(LOG_TAIL_LINES))..];
    (!keep.is_empty() && !text.is_empty()).then(|| keep.join("\n"))
}

/// The Markdown summary: a heading, one table row per job, then each job that did not succeed
/// with its detail and the tail of its log in a collapsed block.
pub fn summary(lines: &[JobLine], workspace: Option<&Path>) -> String {
    let ok = lines
        .iter()
        .filter(|l| l.record.state == JobState::Succeeded)
        .count();
    let mut out = format!("### runner: {ok} of {} jobs succeeded\n\n", lines.len());
    out.push_str("| job | state | reason | duration | turns | tokens | cost |\n");
    out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
    for l in lines {
        let job = &l.record;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            text(&job.name),
            state_cell(job.state),
            if job.reason.is_some() {
                reason(job)
            } else {
                "-".into()
            },
            duration(job).map_or_else(|| "-".into(), format_duration),
            l.turns,
            l.tokens,
            text(&format!("${:.4}", l.cost_usd)),
        );
    }
    out.push('\n');
    for l in lines
        .iter()
        .filter(|l| l.record.state != JobState::Succeeded)
    {
        let job = &l.record;
        let _ = write!(
            out,
            "#### {} {} ({})\n\n**{}**",
            state_icon(job.state),
            text(&job.name),
            text(job.id.as_str()),
            reason(job),
        );
        if let Some(detail) = &job.detail {
            let _ = write!(out, ": {}", text(detail));
        }
        out.push_str("<br>\n");
        if let Some(source) = &job.source {
            let _ = writeln!(out, "Job file: {}<br>", text(&job_file(source, workspace)));
        }
        let _ = writeln!(out, "Job id: {}\n", text(job.id.as_str()));
        match &l.log_tail {
            Some(_) if out.len() > SUMMARY_SOFT_LIMIT => out.push_str(
                "(log left out: the summary is near GitHub's size limit; see `runner logs`)\n\n",
            ),
            Some(tail) => {
                let _ = write!(
                    out,
                    "<details><summary>The end of its log (attempt {})</summary>\n\n<pre>\n{}\n</pre>\n\n</details>\n\n",
                    job.attempts,
                    pre(tail),
                );
            }
            None => {}
        }
    }
    out
}

/// The `::error` workflow command for a job that did not succeed (`None` for one that did).
pub fn annotation(job: &JobRecord, workspace: Option<&Path>) -> Option<String> {
    if job.state == JobState::Succeeded {
        return None;
    }
    let mut properties = format!("title={}", property(&job.name));
    if let Some(source) = &job.source {
        let _ = write!(
            properties,
            ",file={}",
            property(&job_file(source, workspace))
        );
    }
    let mut message = reason(job);
    if let Some(detail) = &job.detail {
        message.push_str(": ");
        message.push_str(detail);
    }
    Some(format!("::error {properties}::{}\n", data(&message)))
}

/// The job file as given, relative to the workspace (the repository's root, which annotations
/// are relative to) when it is inside it.
fn job_file(source: &str, workspace: Option<&Path>) -> String {
    let path = Path::new(source);
    workspace
        .and_then(|w| path.strip_prefix(w).ok())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The reason in words: `exit_code 3`, `timeout`, or the state for a job without one (fixed
/// words of the runner's, so Markdown-safe as they are).
fn reason(job: &JobRecord) -> String {
    match (job.reason, job.exit_code) {
        (Some(r), Some(code)) => format!("{r} {code}"),
        (Some(r), None) => r.to_string(),
        (None, _) => job.state.to_string(),
    }
}

fn state_icon(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "✅",
        JobState::Failed => "❌",
        JobState::Cancelled => "⏹️",
        _ => "⏳",
    }
}

fn state_cell(state: JobState) -> String {
    format!("{} {state}", state_icon(state))
}

fn duration(job: &JobRecord) -> Option<f64> {
    let start = crate::state::parse_rfc3339(job.started_at.as_deref()?)?;
    let end = crate::state::parse_rfc3339(job.finished_at.as_deref()?)?;
    Some((end - start).as_seconds_f64().max(0.0))
}

fn format_duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = secs.round() as u64;
        let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
        if h > 0 {
            format!("{h}h{m:02}m{s:02}s")
        } else {
            format!("{m}m{s:02}s")
        }
    }
}

/// Job-controlled text as Markdown that renders as exactly that text, on one line: every ASCII
/// punctuation character but `,` `-` `.` `/` (which mean nothing inside a line) becomes a
/// numeric character reference, which CommonMark never reads as syntax (no emphasis, link,
/// image, HTML tag, table cell border or math), and control characters, line breaks included,
/// become spaces.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_punctuation() && !matches!(c, ',' | '-' | '.' | '/') {
            let _ = write!(out, "&#{};", c as u32);
        } else if c.is_control() || is_invisible(c) {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Job-controlled text inside a `<pre>` HTML block: Markdown is not parsed there, and with `&`,
/// `<` and `>` escaped nothing can close the block or open a tag. Line breaks and tabs stay;
/// other control characters become spaces.
pub fn pre(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() || is_invisible(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Bidirectional overrides and isolates, which could make the text read differently from what
/// it is.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A workflow command's message, escaped as GitHub's toolkit does (`escapeData`).
pub fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value, escaped as GitHub's toolkit does (`escapeProperty`).
pub fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_renders_as_text_in_markdown() {
        let t = text("a|b <img src=x onerror=alert(1)> [x](http://e) **b**\n| c |");
        assert!(!t.contains(['|', '<', '>', '[', ']', '(', ')', '*', '\n']));
        assert!(t.starts_with("a&#124;b &#60;img"));
    }

    #[test]
    fn a_log_cannot_close_its_block() {
        let p = pre("</pre></details><script>x</script>\n& \x1b[31m");
        assert_eq!(
            p,
            "&lt;/pre&gt;&lt;/details&gt;&lt;script&gt;x&lt;/script&gt;\n&amp;  [31m"
        );
    }

    #[test]
    fn workflow_command_values_are_escaped_as_the_toolkit_does() {
        assert_eq!(
            data("50% done\r\n::warning::x"),
            "50%25 done%0D%0A::warning::x"
        );
        assert_eq!(property("a:b,c%"), "a%3Ab%2Cc%25");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(format_duration(1.26), "1.3s");
        assert_eq!(format_duration(75.0), "1m15s");
        assert_eq!(format_duration(3725.0), "1h02m05s");
    }
}
