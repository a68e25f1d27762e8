//! Delivering an attempt's result once its container has stopped: push the branch, then open
//! the pull request, each step recorded in the store when done. A scheduler restarted after a
//! crash runs the same code for the attempt it adopts, so an unfinished delivery is finished from
//! the stored bundle instead of redoing the job, and each step recognises its own effect (a
//! branch already at the result's commit, a pull request already open for the branch): the
//! result is delivered once. A bundle whose hash changed since the export is never delivered.

use super::{Attempt, Ending};
use crate::job::{JobSpec, RepoSource};
use crate::sandbox::Sandbox;
use crate::state::{JobId, Outcome, Reason};
use crate::store::{DeliveryKind, DeliveryRecord, DeliveryState, SharedStore};
use std::path::{Path, PathBuf};

/// Why a delivery did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error("the stored result {path} changed after it was exported (sha256 {found}, exported as {expected}), so it is not delivered: the job must run again to make a new one")]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
    #[error(
        "cannot read the stored result {path}: {source}: the job must run again to make a new one"
    )]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Push(String),
    #[error("{0}")]
    PullRequest(String),
    #[error("cannot record the delivery: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl DeliverError {
    /// How the attempt ends. A changed or missing bundle is an infrastructure failure a new
    /// attempt can cure (it makes a new result); a refused push or pull request is not.
    fn ending(&self) -> Ending {
        match self {
            DeliverError::Changed { .. }
            | DeliverError::Unreadable { .. }
            | DeliverError::Store(_) => {
                Ending::Done(Outcome::failed(Reason::Infra, None, self.to_string()))
            }
            DeliverError::Push(_) | DeliverError::PullRequest(_) => {
                Ending::permanent(Reason::Infra, self.to_string())
            }
        }
    }
}

/// Delivers attempt `n`'s result, if it has one to deliver (`None` when it has not). Safe to
/// run again after a crash at any point.
pub(crate) async fn deliver(
    store: &SharedStore,
    spec: &JobSpec,
    cache: &Path,
    job: &JobId,
    n: u32,
) -> Option<Ending> {
    let id = job.clone();
    let delivery = match store.call(move |s| s.delivery(&id, n)).await {
        Ok(delivery) => delivery?,
        Err(e) => return Some(DeliverError::Store(e).ending()),
    };
    Some(match run(store, spec, cache, job, n, delivery).await {
        Ok(()) => Ending::Done(Outcome::Succeeded),
        Err(e) => e.ending(),
    })
}

async fn run(
    store: &SharedStore,
    spec: &JobSpec,
    cache: &Path,
    job: &JobId,
    n: u32,
    delivery: DeliveryRecord,
) -> Result<(), DeliverError> {
    if let DeliveryState::Done { .. } = delivery.state {
        return Ok(());
    }
    if delivery.state == DeliveryState::Pending {
        check_unchanged(&delivery).await?;
        let commit = push(spec, cache, &delivery).await?;
        let id = job.clone();
        store
            .call(move |s| s.delivery_pushed(&id, n, &commit))
            .await?;
    }
    let pr_url = match delivery.kind {
        DeliveryKind::Branch => None,
        DeliveryKind::Pr => Some(pull_request(spec, job, &delivery.branch).await?),
    };
    let id = job.clone();
    store
        .call(move |s| s.delivery_done(&id, n, pr_url.as_deref()))
        .await?;
    Ok(())
}

/// Refuses a bundle whose content is not what the export recorded.
async fn check_unchanged(delivery: &DeliveryRecord) -> Result<(), DeliverError> {
    let path = &delivery.bundle;
    let found = crate::result::sha256_file(Path::new(path))
        .await
        .map_err(|source| DeliverError::Unreadable {
            path: path.clone(),
            source,
        })?;
    if found != delivery.bundle_sha256 {
        return Err(DeliverError::Changed {
            path: path.clone(),
            expected: delivery.bundle_sha256.clone(),
            found,
        });
    }
    Ok(())
}

/// Pushes the bundle's head as the delivery's branch; returns the commit the branch holds.
async fn push(
    spec: &JobSpec,
    cache: &Path,
    delivery: &DeliveryRecord,
) -> Result<String, DeliverError> {
    let Some(source) = spec.repo.clone() else {
        return Err(DeliverError::Push(
            "output.mode branch/pr needs a repo".into(),
        ));
    };
    spec.recheck_repo().map_err(DeliverError::Push)?;
    let (cache, bundle, branch) = (
        cache.to_path_buf(),
        PathBuf::from(&delivery.bundle),
        delivery.branch.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mirror = crate::repo::mirror(&cache, &source).map_err(|e| e.to_string())?;
        crate::repo::push_branch(&source, &mirror, &bundle, &branch).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| DeliverError::Push(e.to_string()))?
    .map_err(DeliverError::Push)
}

/// Opens the pull request of `branch`, or finds the one already open for it.
async fn pull_request(spec: &JobSpec, job: &JobId, branch: &str) -> Result<String, DeliverError> {
    let fail = DeliverError::PullRequest;
    let Some(RepoSource::Url(url)) = spec.repo.as_ref() else {
        return Err(fail("a pull request needs a repo URL".into()));
    };
    let output = &spec.output;
    let repo = crate::result::pr_repo_of(url, &output.api_url).ok_or_else(|| {
        fail(format!(
            "{url} does not name a GitHub repository (owner/name)"
        ))
    })?;
    let token = std::env::var(&output.token_env).map_err(|_| {
        fail(format!(
            "output.token_env: the host environment variable {} is not set",
            output.token_env
        ))
    })?;
    let title = output
        .title
        .clone()
        .unwrap_or_else(|| format!("runner: {}", spec.name));
    crate::result::open_pull_request(
        &output.api_url,
        &token,
        &repo,
        branch,
        &output.base,
        &title,
        &format!("Opened by runner for job {job}."),
    )
    .await
    .map_err(|e| fail(e.to_string()))
}

impl<S: Sandbox> Attempt<S> {
    /// Pushes the attempt's result and opens its pull request, if it has a delivery.
    pub(super) async fn deliver(&self) -> Option<Ending> {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let pending = self.store.call(move |s| s.delivery(&id, n)).await;
        if !matches!(pending, Ok(Some(_))) {
            return None;
        }
        deliver(
            &self.store,
            &self.job.spec,
            &self.config.cache_dir,
            &self.job.id,
            self.attempt.n,
        )
        .await
    }

    /// An attempt adopted after a crash whose result was already exported: its delivery is
    /// finished from the stored result (the work is not redone). `None` for any other attempt.
    pub(super) async fn resume_delivery(&self) -> Option<Ending> {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let stored = self.store.call(move |s| s.delivery(&id, n)).await;
        if !matches!(stored, Ok(Some(_))) {
            return None;
        }
        tracing::info!(job = %self.job.id, attempt = n, "finishing the delivery of a stored result");
        // The crash may have come before the container was stopped.
        let name = &self.attempt.container;
        if let Err(e) = self.sandbox.stop(name, self.config.stop_grace).await {
            tracing::debug!(container = %name, "stop before delivery: {e}");
        }
        self.deliver().await
    }
}
