//! Paths: Sprig's `base`, `dir`, `clean`, `ext`, `isAbs` (Go's `path`)
//! and their `os*` forms (Go's `path/filepath`, which on Linux, where the
//! agent runs, is the same: one separator, `/`, and no volume names).

use serde_json::Value;

use super::super::model::Go;
use super::conv::{Out, charge, first, string, text};

/// `path.Base`.
fn base(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let trimmed = {
        let mut end = p.len();
        while end > 0 && p[end - 1] == b'/' {
            end -= 1;
        }
        &p[..end]
    };
    if trimmed.is_empty() {
        return b"/".to_vec();
    }
    let start = trimmed
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    trimmed[start..].to_vec()
}

/// `path.Ext`.
fn ext(p: &[u8]) -> Vec<u8> {
    for i in (0..p.len()).rev() {
        match p[i] {
            b'/' => break,
            b'.' => return p[i..].to_vec(),
            _ => {}
        }
    }
    Vec::new()
}

/// `path.Clean`: the shortest path naming the same file, by lexical
/// processing alone.
fn clean(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p[0] == b'/';
    let n = p.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        (r, dotdot) = (1, 1);
    }
    while r < n {
        let end_at = |i: usize| i == n || p[i] == b'/';
        if p[r] == b'/' || (p[r] == b'.' && end_at(r + 1)) {
            r += 1;
        } else if p[r] == b'.' && p[r + 1] == b'.' && end_at(r + 2) {
            r += 2;
            if out.len() > dotdot {
                // Back to the separator before the last element.
                let mut removed = out.pop();
                while out.len() > dotdot && removed != Some(b'/') {
                    removed = out.pop();
                }
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && p[r] != b'/' {
                out.push(p[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

/// `path.Dir`: all but the last element, cleaned.
fn dir(p: &[u8]) -> Vec<u8> {
    let at = p.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    clean(&p[..at])
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    let path = || string(&first(args));
    Some(match name {
        "sprig_base" | "sprig_osBase" => path().map(|p| text(&base(&p))),
        "sprig_ext" | "sprig_osExt" => path().map(|p| text(&ext(&p))),
        "sprig_dir" | "sprig_osDir" => path().map(|p| text(&dir(&p))),
        "sprig_clean" | "sprig_osClean" => path().and_then(|p| {
            charge(p.len())?;
            Ok(text(&clean(&p)))
        }),
        "sprig_isAbs" | "sprig_osIsAbs" => path().map(|p| Value::Bool(p.first() == Some(&b'/'))),
        _ => return None,
    })
}
