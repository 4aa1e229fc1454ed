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

impl PolicyStore {
    /// Whether `policies` grant any capability on some path under
    /// `prefix` (a mount, `secret/`): Vault's `hasMountAccess`, which
    /// decides whether a token is answered about the mount at
    /// `sys/internal/ui/mounts`. A rule counts when some path under the
    /// mount matches it and it grants something other than `deny`.
    pub(crate) fn grants_under(&self, policies: &[String], prefix: &str) -> bool {
        if policies.iter().any(|p| p == "root") {
            return true;
        }
        policies
            .iter()
            .filter_map(|name| self.policies.get(name))
            .flatten()
            .any(|(pattern, bits)| {
                *bits != 0 && bits & cap::DENY == 0 && reaches_under(pattern, prefix)
            })
    }
}

/// Whether some path under `prefix` (`secret/`) matches `pattern` (a
/// trailing `*` matches any rest, `+` any one segment).
fn reaches_under(pattern: &str, prefix: &str) -> bool {
    let (stem, glob) = match pattern.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (pattern, false),
    };
    let stem: Vec<&str> = stem.split('/').collect();
    let under: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
    for (i, segment) in under.iter().enumerate() {
        let Some(&want) = stem.get(i) else {
            return false;
        };
        if i + 1 == stem.len() {
            // The pattern ends inside the mount's path: only a glob can
            // reach under it.
            return glob && segment.starts_with(want);
        }
        if want != "+" && want != *segment {
            return false;
        }
    }
    true
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

    /// `hasMountAccess`: a rule reaching some path under the mount, and
    /// granting something, lets the token be answered about the mount.
    #[test]
    fn mount_access_is_any_grant_under_the_mount() {
        let cases: &[(&str, u16, &str, bool)] = &[
            ("secret/data/myapp/*", cap::READ, "secret/", true),
            ("secret/data/myapp/*", cap::READ, "kv/", false),
            ("secret/", cap::READ, "secret/", true),
            ("secret", cap::READ, "secret/", false),
            ("sec*", cap::READ, "secret/", true),
            ("*", cap::LIST, "kv/", true),
            ("+/data/*", cap::READ, "secret/", true),
            ("team/*", cap::READ, "team/kv/", true),
            ("team/kv", cap::READ, "team/kv/", false),
            ("secret/data/*", cap::DENY, "secret/", false),
        ];
        let p = vec!["p".to_owned()];
        for &(pattern, bits, mount, want) in cases {
            let s = store(&[(pattern, bits)]);
            assert_eq!(s.grants_under(&p, mount), want, "{pattern} on {mount}");
        }
        assert!(store(&[]).grants_under(&["root".to_owned()], "x/"));
    }
}
