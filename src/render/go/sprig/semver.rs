//! Sprig's `semver` (a `*semver.Version`) and `semverCompare` over a port of `Masterminds/semver` 3.4's
//! versions (coerced: `v1`, `1.2`) and constraints (`=`, `!=`, `>`, `<`,
//! `>=`, `<=`, `~`, `^`, wildcards, `a - b` ranges, `,` and `||`), with
//! its rule that a prerelease version satisfies only a group of
//! constraints that names a prerelease.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use super::super::model::{self, Go};
use super::conv::{Out, charge, string};

/// Go's `\s`.
const S: &str = r"[\t\n\f\r ]";
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("a valid pattern: {e}"))
}

static LOOSE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$",
    )
});
static CONSTRAINT: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!("^{S}*({OPS}){S}*({CV}){S}*$")));
static RANGE: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!("{S}*({CV}){S}+-{S}+({CV}){S}*")));
static FIND: LazyLock<Regex> = LazyLock::new(|| compile(&format!("({OPS}){S}*({CV})")));
static VALID: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        "^({S}*({OPS}){S}*({CV}){S}*)((?:{S}+|,{S}*)({OPS}){S}*({CV}){S}*)*$"
    ))
});

/// A version: major, minor, patch and prerelease (metadata does not
/// count in comparisons).
struct Version {
    parts: [u64; 3],
    pre: String,
    meta: String,
}

fn all(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    s.chars().all(allowed)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// `NewVersion` (with `CoerceNewVersion`): the loose form, checked.
fn version(text: &str) -> Option<Version> {
    let m = LOOSE.captures(text)?;
    let part = |i: usize| -> Option<u64> {
        m.get(i)
            .map_or(Some(0), |g| g.as_str().trim_start_matches('.').parse().ok())
    };
    let pre = m.get(5).map_or("", |g| g.as_str());
    let metadata = m.get(8).map_or("", |g| g.as_str());
    for p in pre.split('.').filter(|_| !pre.is_empty()) {
        let numeric = all(p, |c| c.is_ascii_digit());
        if p.is_empty() || (numeric && p.len() > 1 && p.starts_with('0')) || !all(p, is_ident) {
            return None;
        }
    }
    if !metadata.is_empty()
        && metadata
            .split('.')
            .any(|p| p.is_empty() || !all(p, is_ident))
    {
        return None;
    }
    Some(Version {
        parts: [part(1)?, part(2)?, part(3)?],
        pre: pre.to_owned(),
        meta: metadata.to_owned(),
    })
}

/// `comparePrePart`.
fn compare_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    match (s.parse::<u64>(), o.parse::<u64>()) {
        (Err(_), Err(_)) => s.cmp(o),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Ok(a), Ok(b)) => {
            if a > b {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

fn compare_pre(mine: &str, other: &str) -> Ordering {
    let (left, right): (Vec<&str>, Vec<&str>) =
        (mine.split('.').collect(), other.split('.').collect());
    for i in 0..left.len().max(right.len()) {
        let order = compare_part(
            left.get(i).copied().unwrap_or(""),
            right.get(i).copied().unwrap_or(""),
        );
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

impl Version {
    fn compare(&self, o: &Self) -> Ordering {
        self.parts
            .cmp(&o.parts)
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_pre(&self.pre, &o.pre),
            })
    }
}

/// A `*semver.Version` of the model as the comparisons read it.
fn held(v: &Value) -> Version {
    let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    Version {
        parts: [num("major"), num("minor"), num("patch")],
        pre: text("pre"),
        meta: text("meta"),
    }
}

/// A version of the model: a `*semver.Version`, or with `value` a
/// `semver.Version`.
fn version_value(v: &Version, original: &str, value: bool) -> Value {
    let [major, minor, patch] = v.parts;
    let mut fields = json!({
        "major": major, "minor": minor, "patch": patch,
        "pre": v.pre, "meta": v.meta, "orig": original,
    });
    if value {
        fields["value"] = Value::Bool(true);
    }
    model::semver(fields)
}

/// A `*semver.Version`'s methods that take arguments, and those that make
/// a new version (`IncMajor` …); `None` for a name it does not have.
pub(in crate::render::go) fn method(receiver: &Value, name: &str, args: &[Go<'_>]) -> Option<Out> {
    let mine = held(receiver);
    let other = |args: &[Go<'_>]| match args {
        // The comparisons are the pointer's methods, and take one.
        _ if model::semver_is_value(receiver) => Err(format!(
            "can't evaluate field {name} in type semver.Version"
        )),
        [Go::Semver(o)] if !model::semver_is_value(o) => Ok(held(o)),
        [other] => Err(format!(
            "wrong type for value; expected *semver.Version; got {}",
            model::type_name(other)
        )),
        _ => Err(format!(
            "wrong number of args for {name}: want 1 got {}",
            args.len()
        )),
    };
    let no_args = || {
        if args.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want 0 got {}",
                args.len()
            ))
        }
    };
    // `IncX` drop the prerelease and metadata; the new `Original` is the
    // new text, after the receiver's `v` if it had one.
    let prefix = if receiver
        .get("orig")
        .and_then(Value::as_str)
        .is_some_and(|o| o.starts_with('v'))
    {
        "v"
    } else {
        ""
    };
    let inc = |which: usize| -> Out {
        no_args()?;
        let mut next = Version {
            parts: mine.parts,
            pre: String::new(),
            meta: String::new(),
        };
        if which == 2 && !mine.pre.is_empty() {
            // A prerelease's patch increment only drops the prerelease.
        } else {
            next.parts[which] += 1;
            for p in &mut next.parts[which + 1..] {
                *p = 0;
            }
        }
        let [a, b, c] = next.parts;
        Ok(version_value(&next, &format!("{prefix}{a}.{b}.{c}"), true))
    };
    Some(match name {
        "LessThan" => other(args).map(|o| Value::Bool(mine.compare(&o) == Ordering::Less)),
        "GreaterThan" => other(args).map(|o| Value::Bool(mine.compare(&o) == Ordering::Greater)),
        "Equal" => other(args).map(|o| Value::Bool(mine.compare(&o) == Ordering::Equal)),
        "Compare" => other(args).map(|o| {
            model::int(match mine.compare(&o) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            })
        }),
        "IncMajor" => inc(0),
        "IncMinor" => inc(1),
        "IncPatch" => inc(2),
        _ => return None,
    })
}

/// One constraint: its operator, version and which parts were wildcards.
struct Constraint {
    op: String,
    con: Version,
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "*" | "X")
}

/// `parseConstraint`.
fn constraint(text: &str) -> Option<Constraint> {
    let m = CONSTRAINT.captures(text)?;
    let g = |i: usize| m.get(i).map_or("", |g| g.as_str());
    let (major, minor, patch, pre) = (g(3), g(4), g(5), g(6));
    let (ver, dirty, minor_dirty, patch_dirty) = if is_x(major) || major.is_empty() {
        (format!("0.0.0{pre}"), true, false, false)
    } else if is_x(minor.trim_start_matches('.')) || minor.is_empty() {
        (format!("{major}.0.0{pre}"), true, true, false)
    } else if is_x(patch.trim_start_matches('.')) || patch.is_empty() {
        (format!("{major}{minor}.0{pre}"), true, false, true)
    } else {
        (g(2).to_owned(), false, false, false)
    };
    Some(Constraint {
        op: g(1).to_owned(),
        con: version(&ver)?,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Constraint {
    fn check(&self, v: &Version, include_pre: bool) -> bool {
        if !v.pre.is_empty() && !include_pre {
            return false;
        }
        let c = &self.con;
        let [vmaj, vmin, vpatch] = v.parts;
        let [cmaj, cmin, cpatch] = c.parts;
        match self.op.as_str() {
            "!=" => {
                if self.dirty {
                    if cmaj != vmaj {
                        return true;
                    }
                    if cmin != vmin && !self.minor_dirty {
                        return true;
                    } else if self.minor_dirty {
                        return false;
                    } else if cpatch != vpatch && !self.patch_dirty {
                        return true;
                    } else if self.patch_dirty {
                        return (!v.pre.is_empty() || !c.pre.is_empty())
                            && compare_pre(&v.pre, &c.pre) != Ordering::Equal;
                    }
                }
                v.compare(c) != Ordering::Equal
            }
            ">" => {
                if !self.dirty || (vmaj == cmaj && !self.minor_dirty && !self.patch_dirty) {
                    return v.compare(c) == Ordering::Greater;
                }
                if vmaj != cmaj {
                    return vmaj > cmaj;
                }
                !self.minor_dirty && vmin > cmin
            }
            "<" => v.compare(c) == Ordering::Less,
            ">=" | "=>" => v.compare(c) != Ordering::Less,
            "<=" | "=<" => {
                if !self.dirty {
                    return v.compare(c) != Ordering::Greater;
                }
                !(vmaj > cmaj || (vmaj == cmaj && vmin > cmin && !self.minor_dirty))
            }
            "~" | "~>" => self.tilde(v),
            "^" => self.caret(v),
            _ if self.dirty => self.tilde(v),
            _ => v.compare(c) == Ordering::Equal,
        }
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.compare(c) == Ordering::Less {
            return false;
        }
        if c.parts == [0, 0, 0] && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.parts[0] == c.parts[0] && (v.parts[1] == c.parts[1] || self.minor_dirty)
    }

    fn caret(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.compare(c) == Ordering::Less {
            return false;
        }
        let ([vmaj, vmin, vpatch], [cmaj, cmin, cpatch]) = (v.parts, c.parts);
        if cmaj > 0 || self.minor_dirty {
            return vmaj == cmaj;
        }
        if vmaj > 0 {
            return false;
        }
        if cmin > 0 || self.patch_dirty {
            return vmin == cmin;
        }
        if vmin > 0 {
            return false;
        }
        cpatch == vpatch
    }
}

/// `rewriteRange`: `a - b` as `>= a, <= b`.
fn rewrite_range(text: &str) -> String {
    let mut out = text.to_owned();
    for m in RANGE.captures_iter(text) {
        let (all, from, to) = (&m[0], &m[1], &m[11]);
        out = out.replacen(all, &format!(">= {from}, <= {to} "), 1);
    }
    out
}

/// `semverCompare constraint version`.
fn compare(constraint_text: &str, version_text: &str) -> Result<bool, String> {
    let rewritten = rewrite_range(constraint_text);
    let mut groups = Vec::new();
    for or in rewritten.split("||") {
        if !VALID.is_match(or) {
            return Err(format!("improper constraint: {or}"));
        }
        let mut found: Vec<&str> = FIND.find_iter(or).map(|m| m.as_str()).collect();
        if found.is_empty() {
            found.push(or);
        }
        let parsed = found
            .iter()
            .map(|c| constraint(c).ok_or_else(|| "constraint parser error".to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        let has_pre = parsed.iter().any(|c| !c.con.pre.is_empty());
        groups.push((parsed, has_pre));
    }
    let v = version(version_text).ok_or("Invalid Semantic Version")?;
    Ok(groups
        .iter()
        .any(|(cs, has_pre)| cs.iter().all(|c| c.check(&v, *has_pre))))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    match (name, args) {
        ("sprig_semverCompare", [c, v]) => Some(string(c).and_then(|c| {
            let v = string(v)?;
            charge((c.len() + v.len()) * 16)?;
            let (c, v) = (String::from_utf8_lossy(&c), String::from_utf8_lossy(&v));
            compare(&c, &v).map(Value::Bool)
        })),
        ("sprig_semver", [v]) => Some(string(v).and_then(|v| {
            charge(v.len() * 16)?;
            let original = String::from_utf8_lossy(&v);
            let parsed = version(&original).ok_or("invalid semantic version")?;
            Ok(version_value(&parsed, &original, false))
        })),
        ("sprig_semverCompare" | "sprig_semver", _) => {
            Some(Err(format!("wrong number of args for {name}")))
        }
        _ => None,
    }
}
