//! Logging set-up: text or JSON lines via `tracing`, with a filter that
//! keeps third-party crates quiet below `warn` whatever level is asked for.
//!
//! The driver's own log lines are written never to carry a token or secret
//! value. Dependencies' debug and trace output is not under that control
//! (the template engine, for one, logs helper arguments, i.e. secret data,
//! at debug), so it is capped here rather than trusted.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, ParseError};

/// Crates whose debug/trace output could contain request or template data.
const CAPPED: &[&str] = &[
    "handlebars=off",
    "h2=warn",
    "hyper=warn",
    "hyper_util=warn",
    "reqwest=warn",
    "rustls=warn",
    "tonic=warn",
    "tower=warn",
    "axum=warn",
];

/// The user's filter (`info`, `debug`, `vault_csi_driver=trace`) with the
/// third-party caps applied on top.
pub fn filter(user: &str) -> Result<EnvFilter, ParseError> {
    let mut filter = EnvFilter::try_new(user)?;
    for capped in CAPPED {
        let directive: Directive = capped.parse()?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_survive_a_user_asking_for_everything() {
        let text = filter("trace,handlebars=trace").unwrap().to_string();
        assert!(text.contains("handlebars=off"), "{text}");
        assert!(text.contains("hyper=warn"), "{text}");
    }
}
