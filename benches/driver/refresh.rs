//! Reading the double's request log after the refresh-at-scale window:
//! how renewals spread over time, whether any lease or token lapsed, and
//! the requests per volume per hour by kind.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kinds of Vault request a volume makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `auth/<mount>/login`.
    Login,
    /// `auth/token/renew-self`.
    RenewSelf,
    /// A secret read (`GET`).
    Read,
    /// `sys/leases/renew`.
    LeaseRenew,
    /// Revocations and anything else.
    Other,
}

/// One line of the double's request log.
#[derive(Debug, Clone)]
struct Req {
    at: u128,
    kind: Kind,
    ok: bool,
    token: String,
    lease: String,
}

fn parse_requests(lines: &[String]) -> Vec<Req> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 6 {
                return None;
            }
            let (method, path) = (f[1], f[2]);
            let kind = if path.starts_with("/v1/auth/") && path.ends_with("/login") {
                Kind::Login
            } else if path == "/v1/auth/token/renew-self" {
                Kind::RenewSelf
            } else if path == "/v1/sys/leases/renew" {
                Kind::LeaseRenew
            } else if method == "GET" {
                Kind::Read
            } else {
                Kind::Other
            };
            Some(Req {
                at: f[0].parse().ok()?,
                kind,
                ok: f[3].starts_with('2'),
                token: f[4].to_owned(),
                lease: f[5].to_owned(),
            })
        })
        .collect()
}

/// `(id, issued_ns, revoked)` from a lease or token dump.
fn parse_states(lines: &[String]) -> Vec<(String, u128, bool)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                *f.get(3)? == "true",
            ))
        })
        .collect()
}

/// Nanoseconds since the epoch.
pub fn ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// What the refresh window showed.
#[derive(Debug, Clone, Default)]
pub struct RefreshResult {
    /// Volumes published.
    pub volumes: usize,
    /// First publish sent to last publish answered.
    pub publish_span: Duration,
    /// Most publishes answered in one second.
    pub max_publishes_per_sec: usize,
    /// Observation after the last publish.
    pub window: Duration,
    /// Lease renewals per second since the first publish.
    pub lease_renews_per_sec: Vec<usize>,
    /// Token renewals per second since the first publish.
    pub token_renews_per_sec: Vec<usize>,
    /// Most renewals (lease + token) in one second.
    pub max_renewals_per_sec: usize,
    /// Most lease renewals in one second.
    pub max_lease_renews_per_sec: usize,
    /// Most token renewals in one second.
    pub max_token_renews_per_sec: usize,
    /// Earliest and latest first renewal of a lease, seconds after the
    /// first publish (the spread of the first wave).
    pub first_wave: (f64, f64),
    /// Requests in the window that were not answered 2xx, by kind.
    pub failures: Vec<(Kind, usize)>,
    /// Leases (tokens) that lapsed: revoked or expired at the end, or a
    /// gap between renewals longer than the TTL.
    pub leases_lapsed: usize,
    /// See [`RefreshResult::leases_lapsed`].
    pub tokens_lapsed: usize,
    /// Longest gap between a lease's issue/renewals (and the end).
    pub max_lease_gap: Duration,
    /// Longest gap between a token's login/renewals (and the end).
    pub max_token_gap: Duration,
    /// Requests per volume during the window after the publishes, by kind.
    pub observed_per_volume: Vec<(Kind, f64)>,
    /// Requests per volume per hour, by kind (renewals from the mean
    /// interval between renewals; logins and reads from their steady-state
    /// rate after the publishes).
    pub per_hour: Vec<(Kind, f64)>,
}

/// The analysis inputs.
pub struct Inputs<'a> {
    /// The double's request log.
    pub requests: &'a [String],
    /// The double's leases.
    pub leases: &'a [String],
    /// The double's tokens.
    pub tokens: &'a [String],
    /// When the first publish was sent.
    pub start: SystemTime,
    /// When the last publish was answered.
    pub published: SystemTime,
    /// When the observation ended.
    pub end: SystemTime,
    /// Publish completion times.
    pub completed_at: &'a [SystemTime],
    /// Lease and token TTL.
    pub ttl: Duration,
    /// Volumes published.
    pub volumes: usize,
}

fn per_second(times: impl Iterator<Item = u128>, start: u128, seconds: usize) -> Vec<usize> {
    let mut buckets = vec![0usize; seconds];
    for t in times {
        let i = (t.saturating_sub(start) / 1_000_000_000) as usize;
        if let Some(b) = buckets.get_mut(i) {
            *b += 1;
        }
    }
    buckets
}

/// Longest gap and mean interval between consecutive events per id, with
/// `issued` as the first event and `end` closing the last gap. Returns
/// `(max_gap, lapsed ids, sum of intervals, interval count)`.
fn gaps(
    issued: &[(String, u128, bool)],
    events: &HashMap<String, Vec<u128>>,
    end: u128,
    ttl: Duration,
) -> (Duration, usize, f64, usize) {
    let ttl_ns = ttl.as_nanos();
    let mut max_gap = 0u128;
    let mut lapsed = 0;
    let mut sum = 0.0;
    let mut n = 0;
    for (id, at, revoked) in issued {
        let mut times = vec![*at];
        if let Some(more) = events.get(id) {
            times.extend(more.iter().copied());
        }
        times.sort_unstable();
        let mut worst = 0u128;
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            sum += gap as f64 / 1e9;
            n += 1;
            worst = worst.max(gap);
        }
        worst = worst.max(end.saturating_sub(*times.last().expect("non-empty")));
        if *revoked || worst > ttl_ns {
            lapsed += 1;
        }
        max_gap = max_gap.max(worst);
    }
    (
        Duration::from_nanos(u64::try_from(max_gap).unwrap_or(u64::MAX)),
        lapsed,
        sum,
        n,
    )
}

/// Analyses one refresh window.
pub fn analyse(input: &Inputs<'_>) -> RefreshResult {
    let start = ns(input.start);
    let last_publish = ns(input.published);
    let end = ns(input.end);
    let requests: Vec<Req> = parse_requests(input.requests)
        .into_iter()
        .filter(|r| r.at >= start && r.at <= end)
        .collect();
    let seconds = usize::try_from((end - start) / 1_000_000_000 + 1).unwrap_or(0);
    let of = |kind: Kind| {
        requests
            .iter()
            .filter(move |r| r.kind == kind)
            .map(|r| r.at)
    };
    let lease_renews_per_sec = per_second(of(Kind::LeaseRenew), start, seconds);
    let token_renews_per_sec = per_second(of(Kind::RenewSelf), start, seconds);
    let combined: Vec<usize> = lease_renews_per_sec
        .iter()
        .zip(&token_renews_per_sec)
        .map(|(a, b)| a + b)
        .collect();
    let publishes = per_second(input.completed_at.iter().map(|t| ns(*t)), start, seconds);

    let mut failures: HashMap<Kind, usize> = HashMap::new();
    for r in requests.iter().filter(|r| !r.ok) {
        *failures.entry(r.kind).or_default() += 1;
    }

    // Lease and token timelines.
    let leases: Vec<_> = parse_states(input.leases)
        .into_iter()
        .filter(|(_, at, _)| *at >= start)
        .collect();
    let tokens: Vec<_> = parse_states(input.tokens)
        .into_iter()
        .filter(|(_, at, _)| *at >= start)
        .collect();
    let mut lease_events: HashMap<String, Vec<u128>> = HashMap::new();
    let mut token_events: HashMap<String, Vec<u128>> = HashMap::new();
    for r in requests.iter().filter(|r| r.ok) {
        match r.kind {
            Kind::LeaseRenew => lease_events.entry(r.lease.clone()).or_default().push(r.at),
            Kind::RenewSelf => token_events.entry(r.token.clone()).or_default().push(r.at),
            _ => {}
        }
    }
    let first_renewals: Vec<f64> = leases
        .iter()
        .filter_map(|(id, _, _)| lease_events.get(id)?.iter().min().copied())
        .map(|t| (t - start) as f64 / 1e9)
        .collect();
    let first_wave = (
        first_renewals.iter().copied().fold(f64::INFINITY, f64::min),
        first_renewals.iter().copied().fold(0.0, f64::max),
    );
    let (max_lease_gap, leases_lapsed, lease_sum, lease_n) =
        gaps(&leases, &lease_events, end, input.ttl);
    let (max_token_gap, tokens_lapsed, token_sum, token_n) =
        gaps(&tokens, &token_events, end, input.ttl);

    // Rates.
    let volumes = input.volumes.max(1) as f64;
    let after = (end - last_publish) as f64 / 1e9;
    let steady = |kind: Kind| of(kind).filter(|t| *t > last_publish).count() as f64;
    let observed_per_volume = [Kind::Login, Kind::RenewSelf, Kind::Read, Kind::LeaseRenew]
        .into_iter()
        .map(|k| (k, steady(k) / volumes))
        .collect();
    let per_interval = |sum: f64, n: usize| {
        if n == 0 {
            0.0
        } else {
            3600.0 / (sum / n as f64)
        }
    };
    let per_hour = vec![
        (Kind::Login, steady(Kind::Login) / volumes / after * 3600.0),
        (Kind::RenewSelf, per_interval(token_sum, token_n)),
        (Kind::Read, steady(Kind::Read) / volumes / after * 3600.0),
        (Kind::LeaseRenew, per_interval(lease_sum, lease_n)),
    ];

    let mut failures: Vec<(Kind, usize)> = failures.into_iter().collect();
    failures.sort_by_key(|(k, _)| format!("{k:?}"));
    RefreshResult {
        volumes: input.volumes,
        publish_span: input
            .published
            .duration_since(input.start)
            .unwrap_or_default(),
        max_publishes_per_sec: publishes.iter().copied().max().unwrap_or(0),
        window: Duration::from_secs_f64(after),
        max_renewals_per_sec: combined.iter().copied().max().unwrap_or(0),
        max_lease_renews_per_sec: lease_renews_per_sec.iter().copied().max().unwrap_or(0),
        max_token_renews_per_sec: token_renews_per_sec.iter().copied().max().unwrap_or(0),
        lease_renews_per_sec,
        token_renews_per_sec,
        first_wave,
        failures,
        leases_lapsed,
        tokens_lapsed,
        max_lease_gap,
        max_token_gap,
        observed_per_volume,
        per_hour,
    }
}
