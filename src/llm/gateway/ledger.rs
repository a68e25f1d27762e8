//! Budgets that cannot be overshot: before a call is forwarded, its worst case (prompt tokens,
//! guessed high, plus the most output it may produce) is reserved against what remains of the
//! job's `budget.tokens` and `budget.usd`, counting the reservations of calls still in flight.
//! The call's output is capped to what its reservation allows; its usage settles the
//! reservation and is recorded at most at the reserved amount, so the recorded usage of a job
//! never exceeds its budget.
//!
//! The ledger is in memory: one gateway process serves a job, and it loads what the job used
//! before (an earlier attempt, an earlier process) from the store on the job's first call.

use super::lock;
use crate::job::Budget;
use crate::llm::meter::Tokens;
use crate::llm::prices::Price;
use crate::state::JobId;
use crate::store::Usage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The smallest answer worth asking for: a call that cannot get this many output tokens within
/// the remaining budget is refused.
pub const MIN_ANSWER_TOKENS: u64 = 16;
/// The output reserved for a call that names no `max_tokens` of its own. An answer is cut there
/// when the job has a budget (a whole-file edit of a large file fits).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 8192;

/// What a job has used and holds in reserve.
#[derive(Debug, Default)]
struct Account {
    /// Recorded usage: loaded from the store, then kept here as calls settle.
    spent_tokens: u64,
    spent_usd: f64,
    /// Reservations of calls in flight.
    held_tokens: u64,
    held_usd: f64,
    /// Calls in flight (the account is forgotten when none is and the attempt ends).
    calls: usize,
}

/// Every job's account.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    accounts: Mutex<HashMap<JobId, Account>>,
}

/// Why a call cannot be reserved.
#[derive(Debug)]
pub(super) struct Refusal {
    /// What is used and what the limit is, in words.
    pub why: String,
    /// Recorded usage of the job (tokens, USD).
    pub used: (u64, f64),
}

/// A call's share of the budget, held until it settles (or is dropped, which releases it).
#[derive(Debug)]
pub(super) struct Reservation {
    ledger: Arc<Ledger>,
    job: JobId,
    /// The most tokens (prompt and output) the call may be recorded with.
    pub tokens: u64,
    /// The most USD the call may be recorded with (`f64::INFINITY` without a USD budget).
    pub usd: f64,
    /// The most output tokens the call may produce: its answer is cut there.
    pub output: u64,
    price: Option<Price>,
    settled: bool,
}

impl Ledger {
    /// Whether the job's account is loaded.
    pub fn knows(&self, job: &JobId) -> bool {
        lock(&self.accounts).contains_key(job)
    }

    /// Loads a job's recorded usage (the first loader wins: later loads may be older).
    pub fn load(&self, job: &JobId, used: &Usage) {
        lock(&self.accounts)
            .entry(job.clone())
            .or_insert_with(|| Account {
                spent_tokens: used.tokens(),
                spent_usd: used.cost_usd,
                ..Account::default()
            });
    }

    /// Forgets a job's account when no call of it is in flight (its attempt ended; a later one
    /// loads it again from the store).
    pub fn forget(&self, job: &JobId) {
        let mut accounts = lock(&self.accounts);
        if accounts.get(job).is_some_and(|a| a.calls == 0) {
            accounts.remove(job);
        }
    }

    /// Reserves a call's worst case: `prompt` tokens (a high guess) and up to `requested` output
    /// tokens (the call's own cap, if it names one). Returns the reservation, whose `output` is
    /// what the call may produce, or why nothing fits.
    pub fn reserve(
        self: &Arc<Self>,
        job: &JobId,
        budget: Budget,
        price: Option<Price>,
        prompt: u64,
        requested: Option<u64>,
    ) -> Result<Reservation, Refusal> {
        let mut accounts = lock(&self.accounts);
        let account = accounts.entry(job.clone()).or_default();
        let used = (account.spent_tokens, account.spent_usd);
        let mut allowed = u64::MAX;
        let mut why = String::new();
        if let Some(limit) = budget.tokens {
            let left = limit.saturating_sub(account.spent_tokens + account.held_tokens);
            allowed = allowed.min(left.saturating_sub(prompt));
            why = format!(
                "its budget of {limit} tokens has {left} left ({} used, {} held by calls in flight) and this call needs about {prompt} for its prompt and {MIN_ANSWER_TOKENS} for an answer",
                account.spent_tokens, account.held_tokens
            );
        }
        if let Some(limit) = budget.usd {
            let price = price.unwrap_or(Price {
                input_per_mtok: 0.0,
                output_per_mtok: 0.0,
            });
            let left = (limit - account.spent_usd - account.held_usd).max(0.0);
            let for_output = left - prompt as f64 * price.input_per_mtok / 1e6;
            let by_usd = if for_output <= 0.0 {
                0
            } else if price.output_per_mtok <= 0.0 {
                u64::MAX
            } else {
                (for_output * 1e6 / price.output_per_mtok).floor() as u64
            };
            if by_usd < allowed {
                allowed = by_usd;
                why = format!(
                    "its budget of ${limit:.4} has ${left:.6} left (${:.6} used, ${:.6} held by calls in flight), too little for this call's prompt of about {prompt} tokens and an answer of {MIN_ANSWER_TOKENS}",
                    account.spent_usd, account.held_usd
                );
            }
        }
        let needed = requested.map_or(MIN_ANSWER_TOKENS, |r| r.min(MIN_ANSWER_TOKENS));
        if allowed < needed {
            return Err(Refusal { why, used });
        }
        let output = allowed.min(requested.unwrap_or(DEFAULT_OUTPUT_TOKENS));
        let tokens = prompt + output;
        let usd = match (budget.usd, price) {
            (Some(_), Some(p)) => cost(p, prompt, output),
            (Some(_), None) => 0.0,
            (None, _) => f64::INFINITY,
        };
        account.held_tokens += tokens;
        if usd.is_finite() {
            account.held_usd += usd;
        }
        account.calls += 1;
        Ok(Reservation {
            ledger: self.clone(),
            job: job.clone(),
            tokens,
            usd,
            output,
            price,
            settled: false,
        })
    }
}

fn cost(price: Price, prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * price.input_per_mtok + completion as f64 * price.output_per_mtok) / 1e6
}

impl Reservation {
    /// Settles the reservation with the call's usage, cut to what was reserved (output first,
    /// then prompt), and returns the tokens to record. The job's account counts them at once,
    /// before they reach the store, so the next call's reservation sees them.
    pub fn settle(&mut self, tokens: Tokens) -> Tokens {
        let mut fitted = tokens;
        if fitted.total() > self.tokens {
            fitted.prompt = fitted.prompt.min(self.tokens);
            fitted.completion = self.tokens - fitted.prompt;
        }
        if let Some(price) = self.price {
            while self.usd.is_finite() && cost(price, fitted.prompt, fitted.completion) > self.usd {
                // Rare (a prompt far above its guess): take off the excess, output first.
                let over = cost(price, fitted.prompt, fitted.completion) - self.usd;
                if fitted.completion > 0 && price.output_per_mtok > 0.0 {
                    let cut = ((over * 1e6 / price.output_per_mtok).ceil() as u64).max(1);
                    fitted.completion = fitted.completion.saturating_sub(cut);
                } else if fitted.prompt > 0 && price.input_per_mtok > 0.0 {
                    let cut = ((over * 1e6 / price.input_per_mtok).ceil() as u64).max(1);
                    fitted.prompt = fitted.prompt.saturating_sub(cut);
                } else {
                    break;
                }
            }
        }
        if fitted != tokens {
            tracing::warn!(
                job = %self.job,
                "an LLM call used more than its reservation ({} + {} tokens reported or counted); recorded as {} + {}, the job's budget",
                tokens.prompt, tokens.completion, fitted.prompt, fitted.completion
            );
        }
        let mut accounts = lock(&self.ledger.accounts);
        if let Some(account) = accounts.get_mut(&self.job) {
            account.spent_tokens += fitted.total();
            if let Some(price) = self.price {
                account.spent_usd += cost(price, fitted.prompt, fitted.completion);
            }
        }
        drop(accounts);
        self.release();
        fitted
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let mut accounts = lock(&self.ledger.accounts);
        if let Some(account) = accounts.get_mut(&self.job) {
            account.held_tokens = account.held_tokens.saturating_sub(self.tokens);
            if self.usd.is_finite() {
                account.held_usd = (account.held_usd - self.usd).max(0.0);
            }
            account.calls = account.calls.saturating_sub(1);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobId {
        JobId("j".into())
    }

    fn tokens(limit: u64) -> Budget {
        Budget {
            tokens: Some(limit),
            usd: None,
        }
    }

    #[test]
    fn calls_in_flight_hold_their_share_until_they_settle() {
        let ledger = Arc::new(Ledger::default());
        ledger.load(&job(), &Usage::default());
        let mut first = ledger
            .reserve(&job(), tokens(1000), None, 100, Some(300))
            .unwrap();
        assert_eq!((first.tokens, first.output), (400, 300));
        let second = ledger
            .reserve(&job(), tokens(1000), None, 100, None)
            .unwrap();
        assert_eq!(second.output, 500, "lowered to what remains");
        let refused = ledger
            .reserve(&job(), tokens(1000), None, 50, None)
            .unwrap_err();
        assert!(refused.why.contains("0 left"), "{}", refused.why);
        let recorded = first.settle(Tokens {
            prompt: 90,
            completion: 10,
            reported: true,
        });
        assert_eq!(recorded.total(), 100);
        drop(second);
        let third = ledger
            .reserve(&job(), tokens(1000), None, 100, None)
            .unwrap();
        assert_eq!(third.output, 800, "1000 less 100 used and 100 of prompt");
    }

    #[test]
    fn usage_beyond_the_reservation_is_recorded_at_the_reservation() {
        let ledger = Arc::new(Ledger::default());
        let mut r = ledger.reserve(&job(), tokens(200), None, 50, None).unwrap();
        assert_eq!(r.tokens, 200);
        let recorded = r.settle(Tokens {
            prompt: 60,
            completion: 500,
            reported: true,
        });
        assert_eq!((recorded.prompt, recorded.completion), (60, 140));
        let refused = ledger.reserve(&job(), tokens(200), None, 1, None);
        assert!(refused.is_err());
    }

    #[test]
    fn a_usd_budget_caps_output_by_the_models_price() {
        let ledger = Arc::new(Ledger::default());
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 10.0,
        };
        let usd = Budget {
            tokens: None,
            usd: Some(0.001),
        };
        // 100 prompt tokens cost $0.0001; $0.0009 buys 90 output tokens.
        let mut r = ledger.reserve(&job(), usd, Some(price), 100, None).unwrap();
        assert_eq!(r.output, 90);
        let recorded = r.settle(Tokens {
            prompt: 100,
            completion: 1000,
            reported: true,
        });
        assert!(cost(price, recorded.prompt, recorded.completion) <= 0.001 + 1e-12);
        assert!(ledger.reserve(&job(), usd, Some(price), 10, None).is_err());
    }
}
