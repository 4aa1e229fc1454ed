//! A small model of Vault's ACL evaluation: policies map path patterns to
//! capability sets; a request path is checked against the exact rule if one
//! exists, otherwise against the highest-priority glob or `+` rule.

use std::cmp::Ordering;
use std::collections::HashMap;

/// Capability bits (`read`, `create`, ...), one per Vault capability name.
pub(crate) mod cap {
    pub(crate) const READ: u16 = 1;
    pub(crate) const CREATE: u16 = 1 << 1;
    pub(crate) const UPDATE: u16 = 1 << 2;
    pub(crate) const LIST: u16 = 1 << 3;
    pub(crate) const DELETE: u16 = 1 << 4;
    pub(crate) const SUDO: u16 = 1 << 5;
    pub(crate) const PATCH: u16 = 1 << 6;
    pub(crate) const DENY: u16 = 1 << 7;
    pub(crate) const ALL: u16 = READ | CREATE | UPDATE | LIST | DELETE | SUDO | PATCH;
}

/// Parses a capability name; unknown names grant nothing.
pub(crate) fn capability_bits(name: &str) -> u16 {
    match name.trim().to_ascii_lowercase().as_str() {
        "read" => cap::READ,
        "create" => cap::CREATE,
        "update" => cap::UPDATE,
        "list" => cap::LIST,
        "delete" => cap::DELETE,
        "sudo" => cap::SUDO,
        "patch" => cap::PATCH,
        "deny" => cap::DENY,
        _ => 0,
    }
}

/// Policies by name: each is a list of (pattern, capability bits).
#[derive(Debug, Default)]
pub(crate) struct PolicyStore {
    policies: HashMap<String, Vec<(String, u16)>>,
}

impl PolicyStore {
    /// A store holding Vault's built-in `default` policy (the self-service
    /// token endpoints and lease renewal/lookup).
    pub(crate) fn with_default() -> Self {
        let mut store = Self::default();
        store.put(
            "default",
            vec![
                ("auth/token/lookup-self".into(), cap::READ),
                ("auth/token/renew-self".into(), cap::UPDATE),
                ("auth/token/revoke-self".into(), cap::UPDATE),
                ("sys/capabilities-self".into(), cap::UPDATE),
                ("sys/leases/renew".into(), cap::UPDATE),
                ("sys/leases/lookup".into(), cap::UPDATE),
                ("sys/renew".into(), cap::UPDATE),
            ],
        );
        store
    }

    /// Replaces policy `name`.
    pub(crate) fn put(&mut self, name: &str, rules: Vec<(String, u16)>) {
        self.policies.insert(name.to_owned(), rules);
    }

    /// The capabilities that `policies` grant on `path`. `root` grants
    /// everything; an explicit `deny` on the winning rule grants nothing.
    pub(crate) fn capabilities(&self, policies: &[String], path: &str) -> u16 {
        if policies.iter().any(|p| p == "root") {
            return cap::ALL;
        }
        // Merge rules with the same pattern across policies, as Vault does
        // when it builds one ACL from a token's policies.
        let mut exact: Option<u16> = None;
        let mut best: Option<(&str, u16)> = None;
        let mut merged: HashMap<&str, u16> = HashMap::new();
        for name in policies {
            let Some(rules) = self.policies.get(name) else {
                continue;
            };
            for (pattern, bits) in rules {
                if pattern_matches(pattern, path) {
                    *merged.entry(pattern.as_str()).or_default() |= bits;
                }
            }
        }
        for (pattern, bits) in merged {
            if !is_glob(pattern) {
                exact = Some(bits);
                continue;
            }
            match best {
                Some((current, _)) if priority(pattern, current) != Ordering::Greater => {}
                _ => best = Some((pattern, bits)),
            }
        }
        let bits = exact.or(best.map(|(_, b)| b)).unwrap_or(0);
        if bits & cap::DENY != 0 { 0 } else { bits }
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.ends_with('*') || pattern.split('/').any(|seg| seg == "+")
}

/// Whether `pattern` (trailing `*` = prefix, `+` = exactly one segment)
/// matches `path`.
pub(crate) fn pattern_matches(pattern: &str, path: &str) -> bool {
    let (pat, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pat.split('/').any(|seg| seg == "+") {
        return if prefix {
            path.starts_with(pat)
        } else {
            path == pat
        };
    }
    let want: Vec<&str> = pat.split('/').collect();
    let have: Vec<&str> = path.split('/').collect();
    if prefix {
        if have.len() < want.len() {
            return false;
        }
        let last = want.len() - 1;
        want.iter()
            .zip(&have)
            .enumerate()
            .all(|(i, (p, s))| *p == "+" || if i == last { s.starts_with(p) } else { p == s })
    } else {
        have.len() == want.len() && want.iter().zip(&have).all(|(p, s)| *p == "+" || p == s)
    }
}

/// Vault's documented priority between two matching non-exact patterns:
/// a later first wildcard wins, then no trailing `*`, then fewer `+`
/// segments, then the longer pattern, then the lexically larger one.
fn priority(a: &str, b: &str) -> Ordering {
    let first_wild = |p: &str| p.find(['+', '*']).unwrap_or(p.len());
    let plus_count = |p: &str| p.split('/').filter(|s| *s == "+").count();
    first_wild(a)
        .cmp(&first_wild(b))
        .then_with(|| b.ends_with('*').cmp(&a.ends_with('*')))
        .then_with(|| plus_count(b).cmp(&plus_count(a)))
        .then_with(|| a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(rules: &[(&str, u16)]) -> PolicyStore {
        let mut s = PolicyStore::with_default();
        s.put(
            "p",
            rules.iter().map(|(p, b)| ((*p).to_owned(), *b)).collect(),
        );
        s
    }

    #[test]
    fn prefix_and_segment_globs_match() {
        assert!(pattern_matches("secret/data/*", "secret/data/a/b"));
        assert!(!pattern_matches("secret/data/*", "secret/metadata/a"));
        assert!(pattern_matches("secret/+/teamb", "secret/foo/teamb"));
        assert!(!pattern_matches("secret/+/teamb", "secret/foo/bar/teamb"));
        assert!(pattern_matches("secret/+/app/*", "secret/data/app/x"));
        assert!(pattern_matches("secret/data/app", "secret/data/app"));
        assert!(!pattern_matches("secret/data/app", "secret/data/app2"));
    }

    #[test]
    fn most_specific_rule_wins_and_deny_blocks() {
        let p = vec!["p".to_owned()];
        let s = store(&[
            ("secret/data/*", cap::READ),
            ("secret/data/private/*", cap::DENY),
            ("secret/data/exact", cap::LIST),
        ]);
        assert_eq!(s.capabilities(&p, "secret/data/app"), cap::READ);
        assert_eq!(s.capabilities(&p, "secret/data/private/x"), 0);
        assert_eq!(s.capabilities(&p, "secret/data/exact"), cap::LIST);
        assert_eq!(s.capabilities(&p, "other/x"), 0);
        assert_eq!(
            s.capabilities(&["default".to_owned()], "sys/leases/renew"),
            cap::UPDATE
        );
        assert_eq!(s.capabilities(&["root".to_owned()], "x"), cap::ALL);
    }
}
