//! Admission: may a queued job start now, later, or never? Pure functions over what is running.
//!
//! CPU is compressible and memory is not: a running job reserves its CPU *request*
//! (`resources.cpu_request`, small by default) out of the host's CPU budget, while its CPU cap
//! (`resources.cpus`) only bounds what the container may use. Memory caps are reserved in full, so
//! memory is never overcommitted. `--parallel` and group limits are hard ceilings on top.

use crate::job::JobSpec;
use std::collections::HashMap;

/// What running jobs hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    pub jobs: usize,
    /// The sum of their CPU requests (not their caps).
    pub cpu_requests: f64,
    /// The sum of their memory caps.
    pub memory: u64,
    pub per_group: HashMap<String, usize>,
}

impl Held {
    pub fn take(&mut self, spec: &JobSpec) {
        self.jobs += 1;
        self.cpu_requests += spec.resources.reserved_cpus();
        self.memory += spec.resources.memory.0;
        *self.per_group.entry(spec.group.clone()).or_default() += 1;
    }

    pub fn release(&mut self, spec: &JobSpec) {
        self.jobs = self.jobs.saturating_sub(1);
        self.cpu_requests = (self.cpu_requests - spec.resources.reserved_cpus()).max(0.0);
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

/// Whether `spec` may start now. A best-of-N job starts its `candidates` attempts together, each
/// holding what one attempt holds, so all of them must fit.
pub(crate) fn admit(spec: &JobSpec, held: &Held, limits: &Limits) -> Admission {
    let r = &spec.resources;
    let k = spec.candidates.max(1) as usize;
    if k > 1 {
        if k > limits.parallel {
            return Admission::Never(format!(
                "runs {k} candidates at once but --parallel is {} (lower `candidates`, or raise --parallel)",
                limits.parallel
            ));
        }
        if let Some(limit) = limits.group_limits.get(&spec.group).filter(|l| **l < k) {
            return Admission::Never(format!(
                "runs {k} candidates at once but group {} may run {limit} (lower `candidates`, or raise its --group-limit)",
                spec.group
            ));
        }
    }
    let request = r.reserved_cpus() * k as f64;
    let memory = r.memory.0.saturating_mul(k as u64);
    if request > limits.cpus + EPSILON {
        return Admission::Never(format!(
            "reserves {request} cpus (resources.cpu_request) but the host budget is {} \
             (lower resources.cpu_request, or raise --host-cpus)",
            limits.cpus
        ));
    }
    // The cap reserves nothing, but a quota above the whole budget cannot be what was meant (and
    // the engine refuses a quota above its core count).
    if r.cpus > limits.cpus + EPSILON {
        return Admission::Never(format!(
            "is capped at {} cpus but the host budget is {} (lower resources.cpus, or raise --host-cpus)",
            r.cpus, limits.cpus
        ));
    }
    if memory > limits.memory {
        return Admission::Never(format!(
            "needs {} of memory but the host budget is {} (lower resources.memory, or raise --host-memory)",
            crate::job::ByteSize(memory),
            crate::job::ByteSize(limits.memory)
        ));
    }
    if held.jobs + k > limits.parallel {
        return Admission::Wait;
    }
    if let Some(limit) = limits.group_limits.get(&spec.group) {
        if held.per_group.get(&spec.group).copied().unwrap_or(0) + k > *limit {
            return Admission::Wait;
        }
    }
    if held.cpu_requests + request > limits.cpus + EPSILON
        || held.memory.saturating_add(memory) > limits.memory
    {
        return Admission::Wait;
    }
    Admission::Start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ByteSize;

    /// A job whose CPU request equals its cap, so that sums are easy to follow.
    fn spec(cpus: f64, memory: u64, group: &str) -> JobSpec {
        request(cpus, cpus, memory, group)
    }

    fn request(cpus: f64, cpu_request: f64, memory: u64, group: &str) -> JobSpec {
        let mut s = crate::store::tests_support::spec("a");
        s.resources.cpus = cpus;
        s.resources.cpu_request = cpu_request;
        s.resources.memory = ByteSize(memory);
        s.group = group.into();
        s
    }

    fn two_cores(parallel: usize) -> Limits {
        Limits {
            parallel,
            group_limits: HashMap::new(),
            cpus: 2.0,
            memory: 16 << 30,
        }
    }

    /// Starts copies of `job` until admission says otherwise; returns how many started.
    fn fill(job: &JobSpec, limits: &Limits) -> (usize, Admission) {
        let mut held = Held::default();
        loop {
            match admit(job, &held, limits) {
                Admission::Start => held.take(job),
                other => return (held.jobs, other),
            }
        }
    }

    #[test]
    fn requests_not_caps_are_summed_so_six_default_jobs_fit_two_cores() {
        let default = crate::store::tests_support::spec("a");
        assert_eq!(default.resources.cpus, 1.0);
        assert_eq!(fill(&default, &two_cores(6)), (6, Admission::Wait));
        // Only --parallel stopped them: with more slots, eight quarter-core requests fill 2 cores.
        assert_eq!(fill(&default, &two_cores(100)), (8, Admission::Wait));
        // A larger request reserves more, whatever the cap.
        assert_eq!(
            fill(&request(2.0, 0.5, 1 << 30, "a"), &two_cores(100)),
            (4, Admission::Wait)
        );
    }

    #[test]
    fn memory_caps_are_reserved_in_full() {
        let mut limits = two_cores(100);
        limits.memory = 4 << 30;
        // Tiny CPU requests do not let memory overcommit: 4 GiB holds four 1 GiB caps.
        assert_eq!(
            fill(&request(1.0, 0.01, 1 << 30, "a"), &limits),
            (4, Admission::Wait)
        );
    }

    #[test]
    fn a_request_above_the_host_budget_is_never_admissible() {
        match admit(&request(4.0, 3.0, 1, "a"), &Held::default(), &two_cores(6)) {
            Admission::Never(why) => {
                assert!(why.contains("resources.cpu_request"), "{why}");
                assert!(why.contains("--host-cpus"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stored_request_above_its_cap_reserves_only_the_cap() {
        // Specs stored before `cpu_request` existed read as the default request, which may
        // exceed a small cap.
        let job = request(0.1, 0.25, 1, "a");
        assert_eq!(fill(&job, &two_cores(100)).0, 20);
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

    #[test]
    fn candidates_start_together_each_holding_a_slot() {
        let mut best = crate::store::tests_support::spec("a");
        best.candidates = 3;
        let mut held = Held::default();
        held.take(&crate::store::tests_support::spec("b"));
        // Three more do not fit beside one under --parallel 3; they do under 4.
        assert_eq!(admit(&best, &held, &two_cores(3)), Admission::Wait);
        assert_eq!(admit(&best, &held, &two_cores(4)), Admission::Start);
        match admit(&best, &Held::default(), &two_cores(2)) {
            Admission::Never(why) => assert!(
                why.contains("runs 3 candidates at once but --parallel is 2"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
