//! When to renew, re-fetch and retry: pure functions of a lifetime and a
//! random draw, so every rule has a table test.
//!
//! `u` is a uniform draw in `[0, 1)` supplied by the caller ([`draw`] in
//! production); fixing it in tests makes the bounds exact.
//!
//! | what | when |
//! |---|---|
//! | renewable lease, Vault token | `2/3 × lifetime × [0.9, 1.1)` → 60 % to 73 % |
//! | non-renewable lease, certificate, capped renewal | `[2/3, 9/10)` of the remaining life |
//! | static secret (KV) | `interval × [0.9, 1.0)` |
//! | retry after a failure | `min(1 s × 2^n, 60 s) × [0.5, 1.0)`, at least `Retry-After` |

use std::time::Duration;

use rand::Rng;

/// No refresh is scheduled sooner than this, so a zero or tiny TTL cannot
/// spin the scheduler.
pub const MIN_DELAY: Duration = Duration::from_millis(200);
/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A uniform random draw in `[0, 1)` from the thread's CSPRNG.
pub fn draw() -> f64 {
    rand::rng().random::<f64>()
}

fn at_least_min(d: Duration) -> Duration {
    d.max(MIN_DELAY)
}

/// Delay until renewing something renewable whose lifetime is `ttl`:
/// about two thirds of it, jittered ±10 %.
pub fn renew_delay(ttl: Duration, u: f64) -> Duration {
    at_least_min(ttl.mul_f64(2.0 / 3.0 * (0.9 + 0.2 * u)))
}

/// Delay until replacing something that cannot be renewed and has
/// `remaining` life left: between two thirds and nine tenths of it, never at
/// or after the end.
pub fn refetch_delay(remaining: Duration, u: f64) -> Duration {
    let fraction = 2.0 / 3.0 + (0.9 - 2.0 / 3.0) * u;
    let delay = remaining.mul_f64(fraction);
    if remaining <= MIN_DELAY {
        // Too late to be early: go now-ish rather than after the end.
        return remaining / 2;
    }
    at_least_min(delay)
}

/// Delay until re-reading a static secret every `interval`, jittered
/// downwards so a fleet started together spreads out and none is late.
pub fn static_delay(interval: Duration, u: f64) -> Duration {
    at_least_min(interval.mul_f64(0.9 + 0.1 * u))
}

/// Delay before retry number `attempt` (0-based) after a failure:
/// exponential, capped, with "equal jitter", and never sooner than Vault's
/// `Retry-After`.
pub fn backoff_delay(attempt: u32, u: f64, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
    let capped = exp.min(BACKOFF_CAP);
    let jittered = capped.mul_f64(0.5 + 0.5 * u);
    at_least_min(jittered.max(retry_after.unwrap_or_default()))
}

/// A retry must not wait past the moment the thing it protects expires:
/// aim for half of the life that is left.
pub fn before_expiry(delay: Duration, remaining: Option<Duration>) -> Duration {
    match remaining {
        Some(left) if !left.is_zero() => delay.min(at_least_min(left / 2)),
        _ => delay,
    }
}

/// True when a renewal granted less than it asked for: the max TTL is near,
/// so the secret must be re-fetched before the lease ends.
pub fn renewal_capped(requested: Duration, granted: Duration) -> bool {
    granted < requested
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn renew_delay_is_about_two_thirds_with_jitter() {
        // (ttl, u, expected)
        let table = [
            (s(3600), 0.0, s(2160)),
            (s(3600), 0.5, s(2400)),
            (s(3600), 0.999_999, s(2640)),
            (s(30), 0.5, s(20)),
            (s(0), 0.5, MIN_DELAY),
        ];
        for (ttl, u, expected) in table {
            let got = renew_delay(ttl, u);
            let diff = got.abs_diff(expected);
            assert!(
                diff < Duration::from_millis(10),
                "ttl {ttl:?} u {u}: {got:?} vs {expected:?}"
            );
            assert!(
                got < ttl || ttl.is_zero(),
                "renewal always lands before the end"
            );
        }
    }

    #[test]
    fn refetch_delay_lands_between_two_thirds_and_nine_tenths() {
        for ttl in [s(1), s(2), s(30), s(3600), s(86400 * 30)] {
            for u in [0.0, 0.25, 0.5, 0.75, 0.999_999] {
                let d = refetch_delay(ttl, u);
                assert!(
                    d >= ttl
                        .mul_f64(2.0 / 3.0)
                        .saturating_sub(Duration::from_millis(1)),
                    "{ttl:?} {u}: {d:?}"
                );
                assert!(
                    d < ttl.mul_f64(0.9) + Duration::from_millis(1),
                    "{ttl:?} {u}: {d:?}"
                );
            }
        }
        assert!(refetch_delay(Duration::from_millis(100), 0.5) < Duration::from_millis(100));
    }

    #[test]
    fn static_delay_is_never_late() {
        for u in [0.0, 0.5, 0.999_999] {
            let d = static_delay(s(300), u);
            assert!(d >= s(270) && d <= s(300), "{d:?}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        // (attempt, u, retry_after, min, max)
        let table = [
            (
                0,
                0.0,
                None,
                Duration::from_millis(500),
                Duration::from_millis(500),
            ),
            (0, 0.999, None, Duration::from_millis(999), s(1)),
            (3, 0.0, None, s(4), s(4)),
            (10, 0.999, None, s(59), s(60)),
            (40, 0.0, None, s(30), s(30)),
            (0, 0.0, Some(s(7)), s(7), s(7)),
        ];
        for (attempt, u, retry_after, lo, hi) in table {
            let d = backoff_delay(attempt, u, retry_after);
            assert!(
                d >= lo && d <= hi,
                "attempt {attempt} u {u}: {d:?} not in [{lo:?}, {hi:?}]"
            );
        }
    }

    #[test]
    fn retries_never_wait_past_expiry() {
        assert_eq!(before_expiry(s(60), Some(s(10))), s(5));
        assert_eq!(before_expiry(s(2), Some(s(10))), s(2));
        assert_eq!(before_expiry(s(60), None), s(60));
    }

    #[test]
    fn capped_renewals_are_detected() {
        assert!(renewal_capped(s(30), s(12)));
        assert!(!renewal_capped(s(30), s(30)));
        assert!(!renewal_capped(s(30), s(45)));
    }

    #[test]
    fn jitter_really_spreads_a_herd() {
        let draws: Vec<Duration> = (0..1000).map(|_| renew_delay(s(30), draw())).collect();
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(
            max.saturating_sub(*min) > s(3),
            "1000 draws span only {:?}",
            max.saturating_sub(*min)
        );
    }
}
