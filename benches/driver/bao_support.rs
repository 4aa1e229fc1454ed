//! The tests' real-OpenBao fixtures (`tests/support/openbao.rs` and what it
//! uses), included by path so the benchmark starts OpenBao, its TokenReview
//! stand-in and its audit log exactly as the tests do, with the few helpers
//! of the tests' `support` module they need.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::Duration;

#[path = "../../tests/support/openbao.rs"]
pub mod openbao;
#[path = "../../tests/support/postgres.rs"]
pub mod postgres;
#[path = "../../tests/support/test_vault.rs"]
mod test_vault;
#[path = "../../tests/support/token_review.rs"]
pub mod token_review;

pub use test_vault::TestVault;

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    crate::procs::free_port()
}

/// 12 random hex digits, for scratch directory names.
pub fn rand_suffix() -> String {
    let mut s = String::new();
    for _ in 0..6 {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
    }
    s
}
