//! Admission: may a queued job start now, later, or never? Pure functions over what is running.

use crate::job::JobSpec;
use std::collections::HashMap;

/// What running jobs hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    pub jobs: usize,
    pub cpus: f64,
    pub memory: u64,
    pub per_group: HashMap<String, usize>,
}

impl Held {
    pub fn take(&mut self, spec: &JobSpec) {
        self.jobs += 1;
        self.cpus += spec.resources.cpus;
        self.memory += spec.resources.memory.0;
        *self.per_group.entry(spec.group.clone()).or_default() += 1;
    }

    pub fn release(&mut self, spec: &JobSpec) {
        self.jobs = self.jobs.saturating_sub(1);
        self.cpus = (self.cpus - spec.resources.cpus).max(0.0);
        self.memory = self.memory.saturating_sub(spec.resources.memory.0);
        if let Some(n) = self.per_group.get_mut(&spec.group) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The limits admission enforces.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub parallel: usize,
    pub group_limits: HashMap<String, usize>,
    pub cpus: f64,
    pub memory: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Admission {
    Start,
    /// Not now; another job must end first.
    Wait,
    /// Can never fit this host budget; the reason says what to change.
    Never(String),
}

/// Tiny tolerance so that e.g. 0.1 + 0.2 cpus fits a 0.3 budget.
const EPSILON: f64 = 1e-9;

pub(crate) fn admit(spec: &JobSpec, held: &Held, limits: &Limits) -> Admission {
    let r = &spec.resources;
    if r.cpus > limits.cpus + EPSILON {
        return Admission::Never(format!(
            "needs {} cpus but the host budget is {} (lower resources.cpus, or raise --host-cpus)",
            r.cpus, limits.cpus
        ));
    }
    if r.memory.0 > limits.memory {
        return Admission::Never(format!(
            "needs {} of memory but the host budget is {} (lower resources.memory, or raise --host-memory)",
            r.memory,
            crate::job::ByteSize(limits.memory)
        ));
    }
    if held.jobs >= limits.parallel {
        return Admission::Wait;
    }
    if let Some(limit) = limits.group_limits.get(&spec.group) {
        if held.per_group.get(&spec.group).copied().unwrap_or(0) >= *limit {
            return Admission::Wait;
        }
    }
    if held.cpus + r.cpus > limits.cpus + EPSILON || held.memory + r.memory.0 > limits.memory {
        return Admission::Wait;
    }
    Admission::Start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ByteSize;

    fn spec(cpus: f64, memory: u64, group: &str) -> JobSpec {
        let mut s = crate::store::tests_support::spec("a");
        s.resources.cpus = cpus;
        s.resources.memory = ByteSize(memory);
        s.group = group.into();
        s
    }

    fn limits() -> Limits {
        Limits {
            parallel: 2,
            group_limits: HashMap::from([("db".to_string(), 1)]),
            cpus: 2.0,
            memory: 4 << 30,
        }
    }

    #[test]
    fn parallel_is_a_hard_ceiling() {
        let mut held = Held::default();
        held.take(&spec(0.1, 1, "a"));
        held.take(&spec(0.1, 1, "b"));
        assert_eq!(admit(&spec(0.1, 1, "c"), &held, &limits()), Admission::Wait);
    }

    #[test]
    fn group_limit_holds_while_other_groups_run() {
        let mut held = Held::default();
        held.take(&spec(0.1, 1, "db"));
        assert_eq!(
            admit(&spec(0.1, 1, "db"), &held, &limits()),
            Admission::Wait
        );
        assert_eq!(
            admit(&spec(0.1, 1, "web"), &held, &limits()),
            Admission::Start
        );
    }

    #[test]
    fn resource_sum_stays_within_the_host_budget() {
        let mut held = Held::default();
        held.take(&spec(1.5, 1 << 30, "a"));
        assert_eq!(
            admit(&spec(1.0, 1 << 30, "b"), &held, &limits()),
            Admission::Wait
        );
        assert_eq!(
            admit(&spec(0.5, 1 << 30, "b"), &held, &limits()),
            Admission::Start
        );
        held.release(&spec(1.5, 1 << 30, "a"));
        assert_eq!(
            admit(&spec(1.0, 3 << 30, "b"), &held, &limits()),
            Admission::Start
        );
    }

    #[test]
    fn a_job_larger_than_the_host_is_refused_with_the_fix() {
        let held = Held::default();
        match admit(&spec(8.0, 1, "a"), &held, &limits()) {
            Admission::Never(why) => assert!(why.contains("--host-cpus"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
