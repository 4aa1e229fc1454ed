//! Timing: when to renew, re-fetch and retry, as pure functions of a lifetime and a
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
//! | static re-read interval | never below `--min-refresh-interval` |
//! | a refresh that ran out of `--refresh-timeout` | as a failure: backoff, before expiry |
//! | a lifetime under 1 s (zero, or over on arrival) | `[10 s, 20 s)`, never at once |
//! | a Vault token with no TTL (`lease_duration: 0`) | treated as a non-renewable 5-minute lifetime |
//! | static database/LDAP credentials | `data.ttl` (the next rotation) `+ [1 s, 3 s)` |
//! | a retry during a publish | `100 ms × 2^n` jittered, at least `Retry-After`; give up when that exceeds 10 s |
//! | a standby's redirect | `250 ms × 2^n` jittered, at most 3 times |
//!
//! Every delay is at least [`MIN_DELAY`], so no value Vault sends (a zero
//! TTL, an expiry in the past, a renewal that grants nothing) can make the
//! driver spin.
//!
//! Fairness between tenants (pod namespaces) is decided in [`fairness`].
//!
//! This module is a leaf: it imports nothing of the crate, so every other
//! module may use it.

use std::time::Duration;

use rand::Rng;

pub mod fairness;

pub use fairness::Priority;

/// No refresh is scheduled sooner than this, so a zero or tiny TTL cannot
/// spin the scheduler.
pub const MIN_DELAY: Duration = Duration::from_millis(200);
/// A lifetime shorter than this (zero, or a certificate already expired on
/// arrival, often from clock skew) is not acted on at face value: asking
/// again at once would get the same answer, so the driver waits
/// [`SHORT_LIFETIME_WAIT`] instead.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Base wait before asking again for something that arrived with a lifetime
/// under [`MIN_LIFETIME`]; jittered up to twice as long.
pub const SHORT_LIFETIME_WAIT: Duration = Duration::from_secs(10);
/// The lifetime assumed for a Vault token that came with no TTL
/// (`lease_duration: 0`, which Vault uses for tokens that do not expire):
/// the driver logs in again within it rather than trusting it forever.
pub const NO_TTL_LIFETIME: Duration = Duration::from_secs(300);
/// How long after a static role's rotation its credentials are read again.
pub const ROTATION_GRACE: Duration = Duration::from_secs(1);
/// Spread added to [`ROTATION_GRACE`], so a fleet does not read at once.
pub const ROTATION_JITTER: Duration = Duration::from_secs(2);
/// The longest a publish waits before one retry (kubelet allows a publish
/// about two minutes; a longer `Retry-After` fails the publish with a
/// status saying when to retry).
pub const PUBLISH_MAX_WAIT: Duration = Duration::from_secs(10);
/// How many times a request redirected by a standby is sent again to the
/// configured address before the redirect becomes an error.
pub const STANDBY_RETRIES: u32 = 3;
/// First wait before re-sending a request a standby redirected.
pub const STANDBY_BASE: Duration = Duration::from_millis(250);
/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A uniform random draw in `[0, 1)` from the thread's CSPRNG (or, in the
/// tests that call [`seed`], from a seeded generator, so a run repeats).
pub fn draw() -> f64 {
    #[cfg(test)]
    if let Some(u) = SEEDED.with_borrow_mut(|rng| rng.as_mut().map(rand::Rng::random::<f64>)) {
        return u;
    }
    rand::rng().random::<f64>()
}

#[cfg(test)]
thread_local! {
    static SEEDED: std::cell::RefCell<Option<rand::rngs::StdRng>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes [`draw`] on this thread repeat the sequence of `seed` (tests).
#[cfg(test)]
pub fn seed(seed: u64) {
    use rand::SeedableRng as _;
    SEEDED.set(Some(rand::rngs::StdRng::seed_from_u64(seed)));
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
    if remaining < MIN_LIFETIME {
        // Zero or already over: a new fetch now would bring the same.
        return short_lifetime_delay(u);
    }
    let fraction = 2.0 / 3.0 + (0.9 - 2.0 / 3.0) * u;
    at_least_min(remaining.mul_f64(fraction))
}

/// Delay before asking again for something that arrived with a lifetime
/// under [`MIN_LIFETIME`]: `[10 s, 20 s)`.
pub fn short_lifetime_delay(u: f64) -> Duration {
    SHORT_LIFETIME_WAIT.mul_f64(1.0 + u.clamp(0.0, 1.0))
}

/// The lifetime the driver plans a Vault token by: its TTL, or
/// [`NO_TTL_LIFETIME`] when Vault sent none.
pub fn token_lifetime(ttl: Duration) -> Duration {
    if ttl.is_zero() { NO_TTL_LIFETIME } else { ttl }
}

/// Delay until re-reading static database or LDAP credentials whose next
/// rotation is `to_rotation` away (`data.ttl`): shortly after it, jittered.
pub fn rotation_delay(to_rotation: Duration, u: f64) -> Duration {
    if to_rotation.is_zero() {
        return short_lifetime_delay(u);
    }
    at_least_min(to_rotation + ROTATION_GRACE + ROTATION_JITTER.mul_f64(u.clamp(0.0, 1.0)))
}

/// Delay before retry number `attempt` (0-based) of a call made during a
/// publish: short and jittered, never sooner than Vault's `Retry-After`.
/// `None` when Vault asked for a longer wait than a publish can afford
/// ([`PUBLISH_MAX_WAIT`]): the publish then fails, saying when to retry.
pub fn publish_retry_delay(
    attempt: u32,
    u: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let base = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(10));
    let delay = base
        .mul_f64(0.5 + 0.5 * u)
        .min(Duration::from_secs(2))
        .max(retry_after.unwrap_or_default());
    (delay <= PUBLISH_MAX_WAIT).then_some(delay)
}

/// Delay before re-sending, for the `attempt`-th time (0-based), a request
/// that a standby answered with a redirect; `None` once
/// [`STANDBY_RETRIES`] are used up.
pub fn standby_retry_delay(attempt: u32, u: f64) -> Option<Duration> {
    (attempt < STANDBY_RETRIES).then(|| {
        STANDBY_BASE
            .saturating_mul(1u32 << attempt)
            .mul_f64(0.5 + 0.5 * u)
    })
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

/// What happens to a secret at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Renew its lease in place (same credentials, no re-render).
    Renew,
    /// Fetch it again and re-render.
    Refetch,
}

/// What a fresh Vault answer says about its own lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// It came with a lease id.
    pub leased: bool,
    /// Its lease duration (zero: none).
    pub lease: Duration,
    /// Vault says the lease can be renewed.
    pub renewable: bool,
    /// Time to a static role's next rotation (`data.ttl` of static
    /// database or LDAP credentials).
    pub rotation: Option<Duration>,
    /// Life left in a certificate it carries (`expiration`).
    pub certificate: Option<Duration>,
}

/// When a secret is next due and what happens then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretPlan {
    /// What happens at the deadline.
    pub step: Step,
    /// How long until what it protects ends, if it ends.
    pub expires_in: Option<Duration>,
    /// How long until the deadline.
    pub due_in: Duration,
    /// The increment asked for on renewal.
    pub increment: Duration,
}

/// Plans a fresh answer: renewable lease → renew at ~2/3; non-renewable
/// lease or certificate → re-fetch between 2/3 and 9/10; static database
/// or LDAP credentials → re-read just after their next rotation; anything
/// else (KV) → re-read every `static_interval`.
pub fn plan_secret(life: Lifetime, static_interval: Duration, u: f64) -> SecretPlan {
    let lease = life.lease;
    match (life.leased, life.certificate) {
        (true, _) if life.renewable && !lease.is_zero() => SecretPlan {
            step: Step::Renew,
            expires_in: Some(lease),
            due_in: renew_delay(lease, u),
            increment: lease,
        },
        (true, _) if !lease.is_zero() => SecretPlan {
            step: Step::Refetch,
            expires_in: Some(lease),
            due_in: refetch_delay(lease, u),
            increment: lease,
        },
        (false, _) if life.rotation.is_some() => SecretPlan {
            step: Step::Refetch,
            expires_in: None,
            due_in: rotation_delay(life.rotation.unwrap_or_default(), u),
            increment: Duration::ZERO,
        },
        (_, Some(remaining)) => SecretPlan {
            step: Step::Refetch,
            expires_in: Some(remaining),
            due_in: refetch_delay(remaining, u),
            increment: remaining,
        },
        _ => SecretPlan {
            step: Step::Refetch,
            expires_in: None,
            due_in: static_delay(static_interval, u),
            increment: Duration::ZERO,
        },
    }
}

/// After renewing a lease that asked for `increment` and was granted
/// `granted`: renew again at ~2/3, or, when the renewal was capped (its max
/// TTL is near), replace it before it ends.
pub fn plan_lease_renewal(increment: Duration, granted: Duration, u: f64) -> (Step, Duration) {
    if renewal_capped(increment, granted) {
        (Step::Refetch, refetch_delay(granted, u))
    } else {
        (Step::Renew, renew_delay(granted, u))
    }
}

/// When a Vault token is next due and how it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPlan {
    /// The lifetime it is planned by (see [`token_lifetime`]).
    pub lifetime: Duration,
    /// Renewal no longer extends it: log in again at the deadline.
    pub exhausted: bool,
    /// How long until the renewal or the new login.
    pub due_in: Duration,
}

/// Plans a token from a login that granted `ttl`: a renewable token is
/// renewed at ~2/3; one that cannot be renewed (or came with no TTL, which
/// is planned as a non-renewable [`NO_TTL_LIFETIME`]) is replaced by a new
/// login between 2/3 and 9/10 of its life.
pub fn plan_login(ttl: Duration, renewable: bool, u: f64) -> TokenPlan {
    let lifetime = token_lifetime(ttl);
    let renewable = renewable && !ttl.is_zero();
    TokenPlan {
        lifetime,
        exhausted: !renewable,
        due_in: if renewable {
            renew_delay(lifetime, u)
        } else {
            refetch_delay(lifetime, u)
        },
    }
}

/// Plans a token after a renewal that asked for `requested` and was
/// granted `granted`: renewed again at ~2/3, or, once renewal is capped,
/// replaced by a login before it ends.
pub fn plan_token_renewal(requested: Duration, granted: Duration, u: f64) -> TokenPlan {
    let lifetime = token_lifetime(granted);
    let exhausted = renewal_capped(requested, lifetime);
    TokenPlan {
        lifetime,
        exhausted,
        due_in: if exhausted {
            refetch_delay(lifetime, u)
        } else {
            renew_delay(lifetime, u)
        },
    }
}

/// Delay before retry number `failures` (0-based) of something that ends
/// in `remaining`: the backoff, at least `Retry-After`, never past half of
/// the life that is left.
pub fn retry_delay(
    failures: u32,
    u: f64,
    retry_after: Option<Duration>,
    remaining: Option<Duration>,
) -> Duration {
    before_expiry(backoff_delay(failures, u, retry_after), remaining)
}

/// Longest a volume waits after renders that stopped at a render limit.
pub const RENDER_LIMIT_CAP: Duration = Duration::from_secs(3600);
/// First wait after a render stopped at a render limit.
pub const RENDER_LIMIT_BASE: Duration = Duration::from_secs(60);

/// Delay before rendering a volume again after `strikes` renders in a row
/// (1-based) stopped at a render limit (time, work, output): a minute,
/// doubling, at most an hour, jittered down by up to a quarter. Such a
/// render would stop there again; waiting keeps one tenant from holding
/// the render threads.
pub fn render_limit_delay(strikes: u32, u: f64) -> Duration {
    let shift = strikes.saturating_sub(1).min(16);
    RENDER_LIMIT_BASE
        .saturating_mul(1u32 << shift)
        .min(RENDER_LIMIT_CAP)
        .mul_f64(1.0 - 0.25 * u.clamp(0.0, 1.0))
}

/// Delay before a re-read the node held back (Vault pushed back, or the
/// namespace's budget is spent) is tried again: after `wait`, spread by up
/// to a fifth so deferred volumes do not return together, never past the
/// end of what it protects. Not a failure: no backoff.
pub fn deferral_delay(wait: Duration, u: f64, remaining: Option<Duration>) -> Duration {
    let spread = wait.mul_f64(1.0 + 0.2 * u.clamp(0.0, 1.0));
    before_expiry(spread.max(MIN_DELAY), remaining)
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
    }

    /// No lifetime Vault can send makes the next step due at once.
    #[test]
    fn short_and_zero_lifetimes_never_spin() {
        // (remaining, u, min, max)
        let table = [
            (Duration::ZERO, 0.0, s(10), s(10)),
            (Duration::ZERO, 0.999, s(19), s(20)),
            (Duration::from_millis(100), 0.5, s(15), s(15)),
            (Duration::from_millis(999), 0.0, s(10), s(10)),
            (
                s(1),
                0.0,
                Duration::from_millis(666),
                Duration::from_millis(667),
            ),
        ];
        for (remaining, u, lo, hi) in table {
            let d = refetch_delay(remaining, u);
            assert!(d >= lo && d <= hi, "{remaining:?} {u}: {d:?}");
        }
        for ttl in [Duration::ZERO, Duration::from_millis(1), s(1)] {
            for u in [0.0, 0.5, 0.999] {
                assert!(renew_delay(ttl, u) >= MIN_DELAY);
                assert!(static_delay(ttl, u) >= MIN_DELAY);
                assert!(backoff_delay(0, u, Some(Duration::ZERO)) >= MIN_DELAY);
                assert!(rotation_delay(ttl, u) >= MIN_DELAY);
            }
        }
    }

    #[test]
    fn tokens_without_a_ttl_get_a_bounded_lifetime() {
        assert_eq!(token_lifetime(Duration::ZERO), NO_TTL_LIFETIME);
        assert_eq!(token_lifetime(s(2)), s(2));
        let due = refetch_delay(token_lifetime(Duration::ZERO), 0.5);
        assert!(due >= s(200) && due <= s(270), "{due:?}");
    }

    #[test]
    fn static_credentials_are_read_just_after_rotation() {
        // (ttl, u, expected)
        let table = [
            (s(3600), 0.0, s(3601)),
            (s(3600), 0.5, s(3602)),
            (s(5), 0.999_999, s(8)),
        ];
        for (ttl, u, expected) in table {
            let got = rotation_delay(ttl, u);
            assert!(
                got.abs_diff(expected) < Duration::from_millis(10),
                "{ttl:?} {u}: {got:?}"
            );
            assert!(got > ttl, "after the rotation, not before");
        }
        assert!(rotation_delay(Duration::ZERO, 0.0) >= SHORT_LIFETIME_WAIT);
    }

    #[test]
    fn publish_retries_wait_as_long_as_vault_asks_or_give_up() {
        // (attempt, u, retry_after, expected)
        let table = [
            (0, 0.0, None, Some(Duration::from_millis(50))),
            (2, 0.999_999, None, Some(Duration::from_millis(400))),
            (0, 0.0, Some(s(5)), Some(s(5))),
            (1, 0.5, Some(s(10)), Some(s(10))),
            (0, 0.5, Some(s(11)), None),
            (0, 0.5, Some(s(3600)), None),
        ];
        for (attempt, u, retry_after, expected) in table {
            let got = publish_retry_delay(attempt, u, retry_after);
            match (got, expected) {
                (Some(g), Some(e)) => {
                    assert!(
                        g.abs_diff(e) < Duration::from_millis(2),
                        "{attempt} {retry_after:?}: {g:?}"
                    );
                }
                (g, e) => assert_eq!(g, e, "{attempt} {retry_after:?}"),
            }
        }
    }

    #[test]
    fn standby_redirects_are_retried_a_bounded_number_of_times() {
        let delays: Vec<_> = (0..5).map(|n| standby_retry_delay(n, 0.999_999)).collect();
        assert_eq!(delays.iter().filter(|d| d.is_some()).count(), 3);
        assert!(delays[0].unwrap() <= Duration::from_millis(250));
        assert!(delays[2].unwrap() <= s(1));
        assert!(standby_retry_delay(0, 0.0).unwrap() >= Duration::from_millis(125));
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

    #[test]
    fn fresh_answers_are_planned_by_what_they_are() {
        let kv = Lifetime::default();
        let renewable = Lifetime {
            leased: true,
            lease: s(3600),
            renewable: true,
            ..Lifetime::default()
        };
        let fixed = Lifetime {
            renewable: false,
            ..renewable
        };
        let zero_lease = Lifetime {
            lease: Duration::ZERO,
            ..renewable
        };
        let rotating = Lifetime {
            rotation: Some(s(100)),
            ..Lifetime::default()
        };
        let certificate = Lifetime {
            certificate: Some(s(600)),
            ..Lifetime::default()
        };
        let leased_certificate = Lifetime {
            leased: true,
            lease: Duration::ZERO,
            certificate: Some(s(600)),
            ..Lifetime::default()
        };
        // (answer, step, expires_in, due_in at u = 0, increment)
        let table = [
            (kv, Step::Refetch, None, s(270), Duration::ZERO),
            (renewable, Step::Renew, Some(s(3600)), s(2160), s(3600)),
            (fixed, Step::Refetch, Some(s(3600)), s(2400), s(3600)),
            // A lease of zero is no lease: planned as static.
            (zero_lease, Step::Refetch, None, s(270), Duration::ZERO),
            (rotating, Step::Refetch, None, s(101), Duration::ZERO),
            (certificate, Step::Refetch, Some(s(600)), s(400), s(600)),
            (
                leased_certificate,
                Step::Refetch,
                Some(s(600)),
                s(400),
                s(600),
            ),
        ];
        for (life, step, expires_in, due_in, increment) in table {
            let plan = plan_secret(life, s(300), 0.0);
            assert_eq!(plan.step, step, "{life:?}");
            assert_eq!(plan.expires_in, expires_in, "{life:?}");
            assert_eq!(plan.increment, increment, "{life:?}");
            assert!(
                plan.due_in.abs_diff(due_in) < Duration::from_millis(10),
                "{life:?}: {:?} vs {due_in:?}",
                plan.due_in
            );
        }
    }

    #[test]
    fn renewals_continue_until_capped_then_replace() {
        // (asked, granted, step, due_in at u = 0)
        let table = [
            (s(3600), s(3600), Step::Renew, s(2160)),
            (s(3600), s(4000), Step::Renew, s(2400)),
            (s(3600), s(600), Step::Refetch, s(400)),
            (s(3600), Duration::ZERO, Step::Refetch, s(10)),
        ];
        for (asked, granted, step, due_in) in table {
            let (got, delay) = plan_lease_renewal(asked, granted, 0.0);
            assert_eq!(got, step, "{asked:?} {granted:?}");
            assert!(
                delay.abs_diff(due_in) < Duration::from_millis(10),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn tokens_are_renewed_until_capped_and_logged_in_again_after() {
        // (ttl, renewable, exhausted, lifetime, due_in at u = 0)
        let logins = [
            (s(3600), true, false, s(3600), s(2160)),
            (s(3600), false, true, s(3600), s(2400)),
            // No TTL: a non-renewable five minutes, never "forever".
            (Duration::ZERO, true, true, NO_TTL_LIFETIME, s(200)),
        ];
        for (ttl, renewable, exhausted, lifetime, due_in) in logins {
            let plan = plan_login(ttl, renewable, 0.0);
            assert_eq!(plan.exhausted, exhausted, "{ttl:?}");
            assert_eq!(plan.lifetime, lifetime, "{ttl:?}");
            assert!(plan.due_in.abs_diff(due_in) < Duration::from_millis(10));
        }
        // (asked, granted, exhausted, due_in at u = 0)
        let renewals = [
            (s(3600), s(3600), false, s(2160)),
            (s(3600), s(900), true, s(600)),
            (s(60), s(60), false, s(36)),
        ];
        for (asked, granted, exhausted, due_in) in renewals {
            let plan = plan_token_renewal(asked, granted, 0.0);
            assert_eq!(plan.exhausted, exhausted, "{asked:?} {granted:?}");
            assert!(plan.due_in.abs_diff(due_in) < Duration::from_millis(10));
        }
    }

    #[test]
    fn retries_and_deferrals_stay_before_the_end() {
        // (failures, retry_after, remaining, at u = 0)
        let retries = [
            (0, None, None, Duration::from_millis(500)),
            (3, None, None, s(4)),
            (10, None, None, s(30)),
            (10, None, Some(s(20)), s(10)),
            (0, Some(s(7)), None, s(7)),
            (0, Some(s(7)), Some(s(4)), s(2)),
        ];
        for (failures, retry_after, remaining, expected) in retries {
            assert_eq!(
                retry_delay(failures, 0.0, retry_after, remaining),
                expected,
                "{failures} {retry_after:?} {remaining:?}"
            );
        }
        // (wait, u, remaining, expected)
        let deferrals = [
            (s(10), 0.0, None, s(10)),
            (s(10), 1.0, None, s(12)),
            (s(10), 0.0, Some(s(8)), s(4)),
            (Duration::ZERO, 0.0, None, MIN_DELAY),
        ];
        for (wait, u, remaining, expected) in deferrals {
            assert_eq!(deferral_delay(wait, u, remaining), expected, "{wait:?} {u}");
        }
    }

    #[test]
    fn renders_at_their_limits_wait_longer_each_time() {
        // (strikes, u, delay)
        let table = [
            (1, 0.0, s(60)),
            (2, 0.0, s(120)),
            (3, 0.0, s(240)),
            (7, 0.0, s(3600)),
            (30, 0.0, s(3600)),
            (1, 1.0, s(45)),
            (0, 0.0, s(60)),
        ];
        for (strikes, u, delay) in table {
            assert_eq!(render_limit_delay(strikes, u), delay, "{strikes} {u}");
        }
    }
}
