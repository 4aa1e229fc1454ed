//! The caller's deadline, from the `grpc-timeout` header gRPC clients send
//! (kubelet: 2 minutes on every CSI call). The driver answers a little
//! before it, so the caller reads `DEADLINE_EXCEEDED` with a reason rather
//! than cancelling the call itself.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The most taken off the caller's deadline to leave room for the answer.
const MARGIN: Duration = Duration::from_secs(1);

/// When a call must be answered: a little before the caller's deadline, or
/// (no `grpc-timeout` sent) a day from now, leaving the bound to the
/// driver's own timeouts.
pub fn answer_by(metadata: &MetadataMap) -> Instant {
    let now = Instant::now();
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    match timeout {
        Some(timeout) => now + timeout.saturating_sub(MARGIN.min(timeout / 10)),
        None => now + Duration::from_secs(24 * 3600),
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), per the gRPC HTTP/2 protocol.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    if !value.is_char_boundary(split) {
        return None;
    }
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_grpc_clients_send() {
        assert_eq!(
            parse_grpc_timeout("119999m"),
            Some(Duration::from_millis(119_999))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "10é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_a_little_before_the_callers_deadline() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "120S".parse().unwrap());
        let left = answer_by(&metadata) - Instant::now();
        assert!(left <= Duration::from_secs(119) && left > Duration::from_secs(118));
        metadata.insert("grpc-timeout", "2000m".parse().unwrap());
        let left = answer_by(&metadata) - Instant::now();
        assert!(left <= Duration::from_millis(1800) && left > Duration::from_millis(1700));
    }
}
