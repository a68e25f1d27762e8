//! The attempt's way to the LLM gateway (`network: llm`): a token of its own and a relay whose
//! network namespace the job's container joins.

use super::{Attempt, Ending};
use crate::job::NetworkMode;
use crate::llm::GatewayError;
use crate::sandbox::{
    ContainerPlan, GatewayRoute, RelayPlan, Sandbox, SandboxError, Secret, RELAY_PORT,
};
use crate::state::{Outcome, Reason};
use std::os::unix::fs::MetadataExt;

/// What a `network: llm` attempt needs: the gateway, which serves each attempt on its own socket.
#[derive(Clone, Debug)]
pub(crate) struct LlmAccess {
    pub gateway: crate::llm::Gateway,
}

impl<S: Sandbox> Attempt<S> {
    /// For `network: llm`: gives the container a fresh token and its own way to the gateway (a
    /// relay whose network namespace it joins). `Err` ends the attempt there.
    pub(super) async fn connect_llm(&self, plan: &mut ContainerPlan) -> Result<(), Ending> {
        if self.job.spec.network != NetworkMode::Llm {
            return Ok(());
        }
        let spec = &self.job.spec;
        let infra = |what: &str, e: &dyn std::fmt::Display| {
            Outcome::failed(Reason::Infra, None, format!("{what}: {e}"))
        };
        // The dispatcher could not start the gateway (its run dir): the next attempt tries again.
        let Some(llm) = &self.llm else {
            return Err(Ending::Done(infra(
                "the LLM gateway is not available",
                &"it could not be started (see the runner's log)",
            )));
        };
        if spec.llm.replay.is_none() && crate::llm::upstream_base(spec).is_none() {
            return Err(Ending::permanent(
                Reason::Infra,
                "no LLM upstream: set llm.base_url in the job, or OPENAI_BASE_URL where the runner runs (or replay a cassette with llm.replay)",
            ));
        }
        if let Err(why) = llm.gateway.check_budget_prices(spec) {
            return Err(Ending::permanent(Reason::Budget, why));
        }
        let route = self.sandbox.gateway_route();
        if let GatewayRoute::Unavailable(why) = &route {
            return Err(Ending::permanent(Reason::Infra, why.clone()));
        }
        let token = match llm.gateway.grant(&self.job.id, self.attempt.n, spec).await {
            Ok(token) => token,
            Err(e) => return Err(gateway_failure("cannot grant a gateway token", &e)),
        };
        if let GatewayRoute::Url(url) = route {
            if let Err(e) = llm
                .gateway
                .serve_shared(&self.job.id, self.attempt.n, spec)
                .await
            {
                return Err(gateway_failure("cannot serve the LLM gateway", &e));
            }
            // Over the network, to the gateway's shared listener: the token says which attempt
            // calls, and the backend keeps it out of what it stores in the clear.
            let base = format!("{url}/v1");
            plan.env.0.insert("OPENAI_API_BASE".into(), base.clone());
            plan.env.0.insert("OPENAI_BASE_URL".into(), base);
            plan.secret_env
                .push(("OPENAI_API_KEY".into(), Secret::new(token)));
            return Ok(());
        }
        let socket_dir = match llm
            .gateway
            .serve_attempt(&self.job.id, self.attempt.n)
            .await
        {
            Ok(dir) => dir,
            Err(e) => return Err(gateway_failure("cannot serve the LLM gateway", &e)),
        };
        let user = match std::fs::metadata(&socket_dir) {
            Ok(meta) => format!("{}:{}", meta.uid(), meta.gid()),
            Err(e) => {
                return Err(Ending::Done(infra(
                    "cannot read the gateway socket's directory",
                    &e,
                )))
            }
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
            return Err(if missing {
                Ending::Permanent(outcome)
            } else {
                Ending::Done(outcome)
            });
        }
        let base = format!("http://127.0.0.1:{RELAY_PORT}/v1");
        plan.llm_relay = Some(relay.name);
        plan.env.0.insert("OPENAI_API_BASE".into(), base.clone());
        plan.env.0.insert("OPENAI_BASE_URL".into(), base);
        plan.env.0.insert("OPENAI_API_KEY".into(), token);
        Ok(())
    }
}

/// How a gateway failure ends the attempt: a socket path too long for the state dir is the
/// operator's to fix (no retry helps); a store or socket error may pass, so the job is retried.
fn gateway_failure(what: &str, e: &GatewayError) -> Ending {
    let outcome = Outcome::failed(Reason::Infra, None, format!("{what}: {e}"));
    match e {
        GatewayError::PathTooLong { .. } => Ending::Permanent(outcome),
        GatewayError::Bind { .. } | GatewayError::Listen { .. } | GatewayError::Store(_) => {
            Ending::Done(outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_or_socket_error_of_the_gateway_is_retried_but_a_socket_path_too_long_is_not() {
        let busy = crate::store::StoreError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ));
        let bind = GatewayError::Bind {
            path: "/run/x/gateway.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let long = GatewayError::PathTooLong {
            path: "/very/long/gateway.sock".into(),
        };
        assert!(matches!(
            gateway_failure("cannot grant a gateway token", &GatewayError::Store(busy)),
            Ending::Done(Outcome::Failed {
                reason: Reason::Infra,
                ..
            })
        ));
        assert!(matches!(
            gateway_failure("cannot serve the LLM gateway", &bind),
            Ending::Done(_)
        ));
        assert!(matches!(
            gateway_failure("cannot serve the LLM gateway", &long),
            Ending::Permanent(_)
        ));
    }
}
