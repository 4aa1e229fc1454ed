//! Request logging that cannot leak credentials: the `secrets` map is never
//! printed and the service-account token attribute is replaced by `***`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::vault::TOKENS_KEY;

/// A `volume_context` map printed with the token attribute redacted.
pub struct RedactedContext<'a>(pub &'a HashMap<String, String>);

impl fmt::Debug for RedactedContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted: BTreeMap<&String, &str> = self
            .0
            .iter()
            .map(|(k, v)| (k, if k == TOKENS_KEY { "***" } else { v.as_str() }))
            .collect();
        f.debug_map().entries(sorted).finish()
    }
}

/// A `secrets` map printed as its keys only.
pub struct RedactedSecrets<'a>(pub &'a HashMap<String, String>);

impl fmt::Debug for RedactedSecrets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, "***")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let ctx = HashMap::from([
            (
                TOKENS_KEY.to_owned(),
                r#"{"vault":{"token":"eyJsecret"}}"#.to_owned(),
            ),
            ("roleName".to_owned(), "example".to_owned()),
        ]);
        let text = format!("{:?} {:?}", RedactedContext(&ctx), RedactedSecrets(&ctx));
        assert!(!text.contains("eyJsecret"), "{text}");
        assert!(text.contains("example"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
