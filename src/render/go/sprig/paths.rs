//! Paths: Sprig's `base`, `ext`, `isAbs` (Go's `path`).

use serde_json::Value;

use super::super::model::Go;
use super::conv::{Out, first, string, text};

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

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    let path = || string(&first(args));
    Some(match name {
        "sprig_base" => path().map(|p| text(&base(&p))),
        "sprig_ext" => path().map(|p| text(&ext(&p))),
        "sprig_isAbs" => path().map(|p| Value::Bool(p.first() == Some(&b'/'))),
        _ => return None,
    })
}
