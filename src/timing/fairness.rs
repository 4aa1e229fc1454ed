//! Fairness between tenants (pod namespaces) and towards Vault: pure
//! rules, so every one has a table test. The state they act on (token
//! buckets, semaphores) lives with whoever owns it: the Vault request
//! budget with the governed Vault client, the refresh slots with the
//! scheduler.
//!
//! | what | rule |
//! |---|---|
//! | refresh slots | one namespace holds at most `min(per-namespace cap, total)` |
//! | lease renewals of one volume | up to [`RENEWALS_IN_FLIGHT`] at once |
//! | Vault requests of one namespace | token bucket (`rate`, `burst`): urgent requests go at once, others wait for a token, at most `max_wait` |
//! | Vault answers 429 or 503 | cosmetic work (static re-reads) pauses node-wide for `Retry-After` (default 5 s, at most 5 min) |
//! | static re-read interval | never below `--min-refresh-interval` |

use std::time::Duration;

/// How much a Vault request matters when the budget is tight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Something expires without it: token and lease renewals, logins that
    /// replace a token, fetches that replace a lease or certificate near
    /// its end. Never waits for the budget, never deferred.
    Urgent,
    /// Work a pod waits for (a publish) or a secret not fetched yet. Waits
    /// for the namespace's budget.
    Normal,
    /// Re-reading a static secret that has not expired: waits for the
    /// budget, and is deferred while Vault pushes back.
    Cosmetic,
}

/// Lease renewals of one volume in flight at once: enough that a slow
/// answer does not hold up the volume's other renewals, few enough that one
/// volume cannot flood Vault.
pub const RENEWALS_IN_FLIGHT: usize = 8;

/// How long the node pauses cosmetic work after Vault pushed back without
/// saying for how long (Vault sends `Retry-After` only when
/// `enable_rate_limit_response_headers` is on).
pub const PUSHBACK_DEFAULT: Duration = Duration::from_secs(5);
/// Longest pause the node takes for one pushback, whatever Vault asked.
pub const PUSHBACK_CAP: Duration = Duration::from_secs(300);

/// The re-read interval actually used for an `asked` interval under the
/// admin's `floor`, and whether it was raised.
pub fn clamp_interval(asked: Duration, floor: Duration) -> (Duration, bool) {
    if asked < floor {
        (floor, true)
    } else {
        (asked, false)
    }
}

/// Refresh slots one namespace may hold at once: its cap, never more than
/// the node's total, at least one.
pub fn namespace_slots(total: usize, per_namespace: usize) -> usize {
    per_namespace.min(total).max(1)
}

/// How long the node pauses cosmetic work after Vault answered `status`:
/// `Retry-After` (or [`PUSHBACK_DEFAULT`]) for 429 and 503, capped at
/// [`PUSHBACK_CAP`]; `None` for any other answer.
pub fn pushback(status: u16, retry_after: Option<Duration>) -> Option<Duration> {
    matches!(status, 429 | 503).then(|| {
        retry_after
            .filter(|d| !d.is_zero())
            .unwrap_or(PUSHBACK_DEFAULT)
            .min(PUSHBACK_CAP)
    })
}

/// The priority of fetching one secret. A fetch while publishing is
/// ordinary work the pod waits for; during a refresh, replacing something
/// that expires (a lease or certificate near its end) is urgent, re-reading
/// a static secret is cosmetic, and fetching one not seen before is
/// ordinary.
pub fn fetch_priority(publishing: bool, expires: Option<bool>) -> Priority {
    match (publishing, expires) {
        (true, _) | (false, None) => Priority::Normal,
        (false, Some(true)) => Priority::Urgent,
        (false, Some(false)) => Priority::Cosmetic,
    }
}

/// A token bucket's level after `elapsed` at `rate` tokens a second,
/// never above `burst`.
pub fn refill(tokens: f64, elapsed: Duration, rate: f64, burst: f64) -> f64 {
    (tokens + elapsed.as_secs_f64() * rate).min(burst)
}

/// What a namespace's token bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Send it now.
    Now,
    /// A token is reserved; send it after this wait.
    After(Duration),
    /// It would wait longer than allowed (the wait it would need): do not
    /// send it; nothing is reserved.
    Refuse(Duration),
}

/// Decides one request against a bucket holding `tokens` (may be negative:
/// tokens already reserved by waiting requests). Returns the decision and
/// the new level. Urgent requests (renewals, replacing what expires) never
/// wait: they take a token when there is one and otherwise run into debt,
/// at most `burst` deep, which delays the namespace's other work instead.
/// With a zero or negative `rate` the budget is off.
pub fn admit(
    tokens: f64,
    rate: f64,
    burst: f64,
    priority: Priority,
    max_wait: Duration,
) -> (Admit, f64) {
    if rate <= 0.0 || !rate.is_finite() {
        return (Admit::Now, tokens);
    }
    if priority == Priority::Urgent {
        return (Admit::Now, (tokens - 1.0).max(-burst).min(tokens));
    }
    if tokens >= 1.0 {
        return (Admit::Now, tokens - 1.0);
    }
    let wait = Duration::from_secs_f64(((1.0 - tokens) / rate).min(1e9));
    if wait > max_wait {
        (Admit::Refuse(wait), tokens)
    } else {
        (Admit::After(wait), tokens - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn intervals_below_the_floor_are_raised() {
        // (asked, floor, used, clamped)
        let table = [
            (s(1), s(30), s(30), true),
            (s(29), s(30), s(30), true),
            (s(30), s(30), s(30), false),
            (s(300), s(30), s(300), false),
            (s(1), Duration::ZERO, s(1), false),
        ];
        for (asked, floor, used, clamped) in table {
            assert_eq!(
                clamp_interval(asked, floor),
                (used, clamped),
                "{asked:?} {floor:?}"
            );
        }
    }

    #[test]
    fn one_namespace_never_holds_every_slot_it_could_take() {
        // (total, per namespace, slots)
        let table = [(64, 8, 8), (4, 8, 4), (64, 0, 1), (1, 1, 1), (0, 3, 1)];
        for (total, per, slots) in table {
            assert_eq!(namespace_slots(total, per), slots, "{total} {per}");
        }
    }

    #[test]
    fn pushback_follows_429_and_503_only() {
        // (status, retry_after, pause)
        let table = [
            (429, Some(s(7)), Some(s(7))),
            (429, None, Some(PUSHBACK_DEFAULT)),
            (429, Some(Duration::ZERO), Some(PUSHBACK_DEFAULT)),
            (503, Some(s(3600)), Some(PUSHBACK_CAP)),
            (503, None, Some(PUSHBACK_DEFAULT)),
            (500, Some(s(7)), None),
            (403, None, None),
        ];
        for (status, retry_after, pause) in table {
            assert_eq!(pushback(status, retry_after), pause, "{status}");
        }
    }

    #[test]
    fn fetch_priorities() {
        // (publishing, expires, priority)
        let table = [
            (true, Some(true), Priority::Normal),
            (true, Some(false), Priority::Normal),
            (true, None, Priority::Normal),
            (false, Some(true), Priority::Urgent),
            (false, Some(false), Priority::Cosmetic),
            (false, None, Priority::Normal),
        ];
        for (publishing, expires, priority) in table {
            assert_eq!(fetch_priority(publishing, expires), priority);
        }
    }

    #[test]
    fn buckets_refill_up_to_the_burst() {
        assert!((refill(0.0, s(1), 10.0, 50.0) - 10.0).abs() < 1e-9);
        assert!((refill(-5.0, Duration::from_millis(250), 10.0, 50.0) + 2.5).abs() < 1e-9);
        assert!((refill(45.0, s(60), 10.0, 50.0) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_bucket_admits_delays_and_refuses() {
        let wait = s(30);
        // (tokens, priority, decision, new level)
        let table = [
            (50.0, Priority::Cosmetic, Admit::Now, 49.0),
            (1.0, Priority::Normal, Admit::Now, 0.0),
            (
                0.0,
                Priority::Normal,
                Admit::After(Duration::from_millis(100)),
                -1.0,
            ),
            (
                -4.5,
                Priority::Cosmetic,
                Admit::After(Duration::from_millis(550)),
                -5.5,
            ),
            (
                -299.5,
                Priority::Normal,
                Admit::Refuse(Duration::from_millis(30_050)),
                -299.5,
            ),
            // Urgent work never waits; it runs into debt at most a burst deep.
            (0.0, Priority::Urgent, Admit::Now, -1.0),
            (-49.5, Priority::Urgent, Admit::Now, -50.0),
            (-80.0, Priority::Urgent, Admit::Now, -80.0),
        ];
        for (tokens, priority, decision, level) in table {
            let (got, new) = admit(tokens, 10.0, 50.0, priority, wait);
            let close = match (got, decision) {
                (Admit::After(a), Admit::After(b)) | (Admit::Refuse(a), Admit::Refuse(b)) => {
                    a.abs_diff(b) < Duration::from_millis(1)
                }
                (a, b) => a == b,
            };
            assert!(close, "{tokens} {priority:?}: {got:?} vs {decision:?}");
            assert!((new - level).abs() < 1e-9, "{tokens} {priority:?}: {new}");
        }
        assert_eq!(
            admit(-1000.0, 0.0, 50.0, Priority::Cosmetic, wait),
            (Admit::Now, -1000.0),
            "a zero rate turns the budget off"
        );
    }
}
