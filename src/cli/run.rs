//! `runner run PATH... [--parallel N] [--json] [--junit FILE]`: an in-process scheduler for the
//! given jobs, with live progress on stderr read from the events its attempts record.

use super::exit::{CmdResult, Failure, JOB_FAILED, SUCCESS};
use super::{output, LimitArgs};
use crate::sandbox::{Backend, Sandbox, SandboxError};
use crate::scheduler::{Scope, StateLock};
use crate::state::JobState;
use crate::store::{JobRecord, NewJob, SharedStore};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(
    state_dir: &Path,
    paths: &[PathBuf],
    limits: &LimitArgs,
    backend: &super::BackendArgs,
    json: bool,
    junit: Option<&Path>,
) -> CmdResult {
    let loaded = super::load_jobs(paths, "; nothing was run")?;
    let sandbox = backend.connect().await?;
    check_images(&sandbox, loaded.iter().map(|l| l.spec.image.as_str())).await?;
    let _lock = StateLock::acquire(state_dir).map_err(|e| {
        Failure::environment(format!(
            "{e} (or hand it these jobs with `runner submit --wait`)"
        ))
    })?;
    let mut store = super::open_store(state_dir)?;
    let jobs: Vec<NewJob> = loaded.into_iter().map(NewJob::from).collect();
    let before = store.last_event_seq()?;
    let ids = store.submit(&jobs)?;
    let store = SharedStore::new(store);

    // The display reads the events the attempts record, as `runner events` does.
    let stop_display = CancellationToken::new();
    let display = tokio::spawn(super::follow::until_stopped(
        store.clone(),
        ids.clone(),
        before,
        stop_display.clone(),
    ));
    let shutdown = super::install_signals();
    let result = crate::scheduler::run(
        store.clone(),
        Arc::new(sandbox),
        {
            let mut config = limits.config(state_dir)?;
            config.gateway_listen = backend.gateway_listen;
            config
        },
        Scope::Only(ids.clone()),
        shutdown,
    )
    .await;
    stop_display.cancel();
    let _ = display.await;
    result?;

    let wanted = ids.clone();
    let (records, values) = store
        .call(move |s| {
            let records = s.jobs(&wanted)?;
            let values = records
                .iter()
                .map(|j| output::job_json(s, j))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((records, values))
        })
        .await?;
    if json {
        println!("{}", serde_json::Value::Array(values));
    }
    if let Some(path) = junit {
        let new = !path.exists();
        std::fs::write(path, junit_xml(&records))
            .and_then(|()| {
                // The report is the user's, not the state dir's: the user's umask decides.
                if new {
                    crate::store::private::give_user_mode(path)?;
                }
                Ok(())
            })
            .map_err(|e| {
                Failure::environment(format!(
                    "cannot write the JUnit report {}: {e}",
                    path.display()
                ))
            })?;
    }
    super::github::report(state_dir, &store, &ids, json).await?;
    let failed = records
        .iter()
        .filter(|j| j.state != JobState::Succeeded)
        .count();
    eprintln!(
        "runner: {} of {} jobs succeeded",
        records.len() - failed,
        records.len()
    );
    Ok(if failed == 0 { SUCCESS } else { JOB_FAILED })
}

/// Refuses to start when an image is missing (exit 3 naming the fix).
pub(super) async fn check_images<'a>(
    sandbox: &Backend,
    images: impl Iterator<Item = &'a str>,
) -> Result<(), Failure> {
    let images: BTreeSet<&str> = images.collect();
    for image in images {
        if !sandbox.image_exists(image).await? {
            let hint = match sandbox {
                Backend::Kubernetes(_) => format!("no node of the cluster reports it: load it on the nodes (`docker save {image} | docker load` on each), or push it to a registry they use"),
                Backend::Docker(_) => crate::sandbox::missing_image_hint(image),
            };
            return Err(SandboxError::ImageMissing {
                image: image.to_string(),
                hint,
            }
            .into());
        }
    }
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A JUnit report: one test case per job; failures carry the reason and detail.
fn junit_xml(jobs: &[JobRecord]) -> String {
    let failures = jobs.iter().filter(|j| j.state == JobState::Failed).count();
    let skipped = jobs
        .iter()
        .filter(|j| j.state == JobState::Cancelled)
        .count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"runner\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        jobs.len()
    );
    for job in jobs {
        let duration = match (
            job.started_at
                .as_deref()
                .and_then(crate::state::parse_rfc3339),
            job.finished_at
                .as_deref()
                .and_then(crate::state::parse_rfc3339),
        ) {
            (Some(a), Some(b)) => (b - a).as_seconds_f64(),
            _ => 0.0,
        };
        xml.push_str(&format!(
            "  <testcase classname=\"runner\" name=\"{} ({})\" time=\"{duration:.3}\">",
            xml_escape(&job.name),
            job.id
        ));
        match job.state {
            JobState::Succeeded => {}
            JobState::Cancelled => xml.push_str("<skipped message=\"cancelled\"/>"),
            _ => xml.push_str(&format!(
                "<failure message=\"{}\">{}</failure>",
                xml_escape(
                    &job.reason
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| job.state.to_string())
                ),
                xml_escape(job.detail.as_deref().unwrap_or(""))
            )),
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}
