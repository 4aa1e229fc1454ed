//! A wrapper for values that must never be printed: service-account JWTs,
//! Vault tokens, secret responses and rendered file contents.
//!
//! `Debug` prints `***`, there is deliberately no `Display`, and the buffer is
//! zeroed when the value is dropped, so a stray `{:?}` in a log line or an
//! error cannot leak a credential and freed memory does not keep it around.

use std::fmt;

use zeroize::Zeroize;

/// A value whose contents are sensitive. Read it with [`Secret::expose`] at
/// the single place that needs the bytes (an HTTP header, a file write).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Borrows the sensitive value. Call sites are the audit list of where
    /// secrets leave the driver, so keep them few.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<Vec<u8>> for Secret<Vec<u8>> {
    fn from(value: Vec<u8>) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = Secret::new(String::from("hvs.very-secret"));
        assert_eq!(format!("{token:?}"), "***");
        assert_eq!(format!("{:?}", Some(&token)), "Some(***)");
        assert_eq!(token.expose(), "hvs.very-secret");
    }
}
