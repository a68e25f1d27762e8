//! The attempt's way to the LLM gateway (`network: llm`): a token of its own and a relay whose
//! network namespace the job's container joins.

use super::Attempt;
use crate::job::NetworkMode;
use crate::sandbox::{ContainerPlan, RelayPlan, Sandbox, SandboxError, RELAY_PORT};
use crate::state::{Outcome, Reason};
use std::os::unix::fs::MetadataExt;

/// What a `network: llm` attempt needs: the gateway, which serves each attempt on its own socket.
#[derive(Clone, Debug)]
pub(crate) struct LlmAccess {
    pub gateway: crate::llm::Gateway,
}

impl<S: Sandbox> Attempt<S> {
    /// For `network: llm`: gives the container a fresh token and its own way to the gateway (a
    /// relay whose network namespace it joins). `Ok(Some(..))` is a failure a retry may cure.
    pub(super) async fn connect_llm(
        &self,
        plan: &mut ContainerPlan,
    ) -> Result<Option<Outcome>, Outcome> {
        if self.job.spec.network != NetworkMode::Llm {
            return Ok(None);
        }
        let spec = &self.job.spec;
        let Some(llm) = &self.llm else {
            return Err(Outcome::failed(
                Reason::Infra,
                None,
                "the LLM gateway is not available",
            ));
        };
        if spec.llm.replay.is_none() && crate::llm::upstream_base(spec).is_none() {
            return Err(Outcome::failed(
                Reason::Infra,
                None,
                "no LLM upstream: set llm.base_url in the job, or OPENAI_BASE_URL where the runner runs (or replay a cassette with llm.replay)",
            ));
        }
        let infra = |what: &str, e: &dyn std::fmt::Display| {
            Outcome::failed(Reason::Infra, None, format!("{what}: {e}"))
        };
        let token = llm
            .gateway
            .grant(&self.job.id, self.attempt.n, spec)
            .await
            .map_err(|e| infra("cannot grant a gateway token", &e))?;
        let socket_dir = llm
            .gateway
            .serve_attempt(&self.job.id, self.attempt.n)
            .await
            .map_err(|e| infra("cannot serve the LLM gateway", &e))?;
        let user = match std::fs::metadata(&socket_dir) {
            Ok(meta) => format!("{}:{}", meta.uid(), meta.gid()),
            Err(e) => return Err(infra("cannot read the gateway socket's directory", &e)),
        };
        let relay = RelayPlan {
            name: self.labels().relay_name(),
            labels: self.labels(),
            socket_dir,
            user,
        };
        if let Err(e) = self.sandbox.start_relay(&relay).await {
            let missing = matches!(e, SandboxError::ImageMissing { .. });
            let outcome = infra("cannot start the gateway relay", &e);
            return if missing {
                Err(outcome)
            } else {
                Ok(Some(outcome))
            };
        }
        let base = format!("http://127.0.0.1:{RELAY_PORT}/v1");
        plan.llm_relay = Some(relay.name);
        plan.env.0.insert("OPENAI_API_BASE".into(), base.clone());
        plan.env.0.insert("OPENAI_BASE_URL".into(), base);
        plan.env.0.insert("OPENAI_API_KEY".into(), token);
        Ok(None)
    }
}
