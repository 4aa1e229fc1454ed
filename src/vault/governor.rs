//! The node's Vault request budget. Vault's rate-limit quotas count per
//! client address by default, and every pod on a node talks to Vault from
//! the driver's address: one tenant's excess would get everyone's requests
//! refused. The [`Governor`] keeps a token bucket per pod namespace, so a
//! namespace over its budget waits instead of spending the node's quota,
//! and when Vault pushes back (429, 503) it pauses cosmetic work (re-reads
//! of static secrets) node-wide while renewals and replacements of what is
//! about to expire still go out.
//!
//! The arithmetic is in [`crate::timing::fairness`]; this module holds the
//! state, and [`super::GovernedVault`] sends every request through it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Error;
pub use crate::timing::Priority;
use crate::timing::fairness::{self, Admit};

/// A namespace's request budget: `rate` requests a second with bursts of
/// `burst`; a request waits at most `max_wait` for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Sustained requests a second per namespace; zero turns the budget off.
    pub rate: f64,
    /// Requests a namespace may send at once after a quiet spell.
    pub burst: u32,
    /// Longest wait for the budget before a request is given up.
    pub max_wait: Duration,
}

impl BudgetSettings {
    /// No budget: every request goes at once.
    pub fn unlimited() -> Self {
        Self {
            rate: 0.0,
            burst: 0,
            max_wait: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: HashMap<String, Bucket>,
    paused_until: Option<Instant>,
}

/// Buckets of namespaces that are full again are forgotten once there are
/// this many.
const PRUNE_ABOVE: usize = 1024;

/// Per-namespace budgets and the node-wide pushback state. One per process,
/// shared by every volume.
#[derive(Debug)]
pub struct Governor {
    settings: BudgetSettings,
    inner: Mutex<Inner>,
}

impl Governor {
    /// A governor with these budgets.
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The budgets it enforces.
    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// Lets one request of `namespace` go: at once, or after waiting for its
    /// budget. Returns how long it waited. Refuses (without sending) a
    /// cosmetic request while Vault pushes back, and any request that would
    /// wait longer than `max_wait`. Dropping the future (the caller's
    /// deadline) gives up the wait.
    pub async fn admit(
        &self,
        namespace: &str,
        priority: Priority,
        operation: &'static str,
    ) -> Result<Duration, Error> {
        let now = Instant::now();
        let decision = {
            let mut inner = self.inner.lock().expect("governor poisoned");
            if priority == Priority::Cosmetic
                && let Some(until) = inner.paused_until.filter(|u| *u > now)
            {
                return Err(Error::Held {
                    operation,
                    reason: "Vault answered 429 or 503 and the node pauses re-reads of static secrets",
                    retry_after: until - now,
                });
            }
            let burst = f64::from(self.settings.burst.max(1));
            if inner.buckets.len() > PRUNE_ABOVE {
                let rate = self.settings.rate;
                inner
                    .buckets
                    .retain(|_, b| fairness::refill(b.tokens, now - b.at, rate, burst) < burst);
            }
            let bucket = inner.buckets.entry(namespace.to_owned()).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            let tokens =
                fairness::refill(bucket.tokens, now - bucket.at, self.settings.rate, burst);
            let (decision, left) = fairness::admit(
                tokens,
                self.settings.rate,
                burst,
                priority,
                self.settings.max_wait,
            );
            bucket.tokens = left;
            bucket.at = now;
            decision
        };
        match decision {
            Admit::Now => Ok(Duration::ZERO),
            Admit::After(wait) => {
                tokio::time::sleep(wait).await;
                Ok(wait)
            }
            Admit::Refuse(wait) => Err(Error::Held {
                operation,
                reason: "the pod namespace is over its Vault request budget (--namespace-vault-rate, --namespace-vault-burst)",
                retry_after: wait,
            }),
        }
    }

    /// Takes note of a request's outcome: a 429 or 503 from Vault pauses
    /// cosmetic work node-wide. Returns the pause it started or extended.
    pub fn observe(&self, error: &Error) -> Option<Duration> {
        let pause = fairness::pushback(error.status()?, error.retry_after())?;
        let until = Instant::now() + pause;
        let mut inner = self.inner.lock().expect("governor poisoned");
        if inner.paused_until.is_some_and(|u| u >= until) {
            return None;
        }
        inner.paused_until = Some(until);
        Some(pause)
    }

    /// Until when cosmetic work is paused, if it is now.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.inner
            .lock()
            .expect("governor poisoned")
            .paused_until
            .filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor(rate: f64, burst: u32) -> Governor {
        Governor::new(BudgetSettings {
            rate,
            burst,
            max_wait: Duration::from_secs(5),
        })
    }

    /// A namespace past its burst waits for tokens; another namespace does
    /// not notice.
    #[tokio::test(start_paused = true)]
    async fn one_namespace_waits_and_another_does_not() {
        let g = governor(2.0, 3);
        for _ in 0..3 {
            assert_eq!(
                g.admit("noisy", Priority::Cosmetic, "read").await.unwrap(),
                Duration::ZERO
            );
        }
        let started = Instant::now();
        let waited = g.admit("noisy", Priority::Cosmetic, "read").await.unwrap();
        assert_eq!(waited, Duration::from_millis(500));
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(
            g.admit("quiet", Priority::Normal, "read").await.unwrap(),
            Duration::ZERO
        );
        // Renewals of the noisy namespace still go at once.
        assert_eq!(
            g.admit("noisy", Priority::Urgent, "renew_lease")
                .await
                .unwrap(),
            Duration::ZERO
        );
    }

    /// Waits longer than `max_wait` are refused without reserving anything.
    #[tokio::test(start_paused = true)]
    async fn long_waits_are_refused() {
        let g = governor(1.0, 1);
        g.admit("ns", Priority::Normal, "read").await.unwrap();
        let mut refused = 0;
        for _ in 0..10 {
            let attempt = tokio::time::timeout(
                Duration::from_millis(1),
                g.admit("ns", Priority::Normal, "read"),
            )
            .await;
            if let Ok(Err(Error::Held { retry_after, .. })) = attempt {
                assert!(retry_after > Duration::from_secs(5));
                refused += 1;
            }
        }
        assert_eq!(
            refused, 5,
            "five waits of 1..5 s are reserved, the rest refused"
        );
    }

    /// 429 and 503 pause cosmetic work for Retry-After; urgent and normal
    /// work goes on.
    #[tokio::test(start_paused = true)]
    async fn pushback_pauses_cosmetic_work_only() {
        let g = governor(0.0, 0);
        let limited = Error::RateLimited {
            operation: "read",
            status: 429,
            retry_after: Some(Duration::from_secs(8)),
            message: String::new(),
        };
        assert_eq!(g.observe(&limited), Some(Duration::from_secs(8)));
        assert!(matches!(
            g.admit("ns", Priority::Cosmetic, "read").await,
            Err(Error::Held { retry_after, .. }) if retry_after == Duration::from_secs(8)
        ));
        assert!(g.admit("ns", Priority::Urgent, "renew_lease").await.is_ok());
        assert!(g.admit("ns", Priority::Normal, "login").await.is_ok());
        let denied = Error::Status {
            operation: "read",
            status: 403,
            message: String::new(),
        };
        assert_eq!(g.observe(&denied), None);
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(g.admit("ns", Priority::Cosmetic, "read").await.is_ok());
        let sealed = Error::Status {
            operation: "read",
            status: 503,
            message: String::new(),
        };
        assert_eq!(g.observe(&sealed), Some(fairness::PUSHBACK_DEFAULT));
        assert!(g.paused_until().is_some());
    }
}
