//! consul-template's `toTOML`: `BurntSushi/toml`'s encoder over the
//! model. A map's plain keys come first (sorted), then its tables and
//! arrays of tables (sorted), each nested level indented by two spaces; a
//! `nil` value is left out; a map inside an array is written inline.

use std::fmt::Write as _;

use serde_json::Value;

use super::args::{Out, arity, lossy};
use super::clock::layout;
use super::model::{self, Go, go};
use crate::render::budget;

/// Nesting beyond this fails (a render's stack stays bounded).
const MAX_DEPTH: usize = 256;

/// What TOML makes of a value (`tomlTypeOfGo`): `None` for `nil`.
#[derive(PartialEq, Eq)]
enum Kind {
    Table,
    ArrayOfTables,
    Other,
}

fn kind(g: &Go<'_>) -> Option<Kind> {
    Some(match g {
        Go::Nil => return None,
        Go::Map(_) | Go::NilMap | Go::AnyMap(_) | Go::Secret(_) | Go::Pki(_) => Kind::Table,
        Go::List(items) | Go::Strings(items) => {
            if items.is_empty() {
                Kind::Other
            } else if items.iter().all(|i| kind(&go(i)) == Some(Kind::Table)) {
                Kind::ArrayOfTables
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    })
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// `dblQuotedReplacer`'s escapes, inside double quotes.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn key_text(key: &str) -> String {
    if is_bare(key) {
        key.to_owned()
    } else {
        let mut out = String::new();
        quoted(&mut out, key);
        out
    }
}

struct Encoder {
    out: String,
}

impl Encoder {
    fn newline(&mut self) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
    }

    fn indent(&mut self, key: &[String]) {
        for _ in 1..key.len() {
            self.out.push_str("  ");
        }
    }

    fn path(key: &[String]) -> String {
        key.iter()
            .map(|k| key_text(k))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A map's entries, sorted by key.
    fn entries<'v>(g: &Go<'v>) -> Result<Vec<(String, Go<'v>)>, String> {
        match g {
            Go::Map(map) => Ok(map.iter().map(|(k, v)| (k.clone(), go(v))).collect()),
            Go::NilMap => Ok(Vec::new()),
            Go::AnyMap(_) => Err("toml: cannot encode a map with non-string key type".to_owned()),
            other => Err(format!(
                "toTOML of a {} is not converted: give it the secret's .Data",
                model::type_name(other)
            )),
        }
    }

    /// `encode` of the value under `key`.
    fn encode(&mut self, key: &mut Vec<String>, value: &Go<'_>) -> Result<(), String> {
        budget::charge(1, []).map_err(|e| e.to_string())?;
        if key.len() > MAX_DEPTH {
            return Err("toTOML: the value nests too deeply".to_owned());
        }
        match kind(value) {
            None => Ok(()),
            Some(Kind::Table) => {
                if key.len() == 1 {
                    self.newline();
                }
                if !key.is_empty() {
                    self.indent(key);
                    let path = Self::path(key);
                    self.out.push('[');
                    self.out.push_str(&path);
                    self.out.push(']');
                    self.newline();
                }
                self.table(key, value, false)
            }
            Some(Kind::ArrayOfTables) => {
                if key.is_empty() {
                    return Err("toml: top-level values must be Go maps or structs".to_owned());
                }
                let (Go::List(items) | Go::Strings(items)) = value else {
                    return Ok(());
                };
                for item in *items {
                    let item = go(item);
                    self.newline();
                    self.indent(key);
                    let path = Self::path(key);
                    self.out.push_str("[[");
                    self.out.push_str(&path);
                    self.out.push_str("]]");
                    self.newline();
                    self.table(key, &item, false)?;
                }
                Ok(())
            }
            Some(Kind::Other) => self.key_value(key, value, false),
        }
    }

    fn key_value(&mut self, key: &[String], value: &Go<'_>, inline: bool) -> Result<(), String> {
        if key.is_empty() {
            return self.element(value, 0);
        }
        if !inline {
            self.indent(key);
        }
        let name = key_text(&key[key.len() - 1]);
        self.out.push_str(&name);
        self.out.push_str(" = ");
        self.element(value, key.len())?;
        if !inline {
            self.newline();
        }
        Ok(())
    }

    /// `eMap`: plain keys first, then tables, each group sorted.
    fn table(&mut self, key: &mut Vec<String>, value: &Go<'_>, inline: bool) -> Result<(), String> {
        let mut entries = Self::entries(value)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let (sub, direct): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(_, v)| matches!(kind(v), Some(Kind::Table | Kind::ArrayOfTables)));
        if inline {
            self.out.push('{');
        }
        let trailing = !sub.is_empty();
        let mut write = |this: &mut Self, group: Vec<(String, Go<'_>)>, trailing: bool| {
            let live: Vec<_> = group
                .into_iter()
                .filter(|(_, v)| kind(v).is_some())
                .collect();
            let n = live.len();
            for (i, (k, v)) in live.into_iter().enumerate() {
                if inline {
                    this.key_value(std::slice::from_ref(&k), &v, true)?;
                    if trailing || i + 1 != n {
                        this.out.push_str(", ");
                    }
                } else {
                    key.push(k);
                    let out = this.encode(key, &v);
                    key.pop();
                    out?;
                }
            }
            Ok::<(), String>(())
        };
        write(self, direct, trailing)?;
        write(self, sub, false)?;
        if inline {
            self.out.push('}');
        }
        Ok(())
    }

    /// `eElement`: a value after `key = `, or inside an array.
    fn element(&mut self, value: &Go<'_>, depth: usize) -> Result<(), String> {
        budget::charge(1, []).map_err(|e| e.to_string())?;
        if depth > MAX_DEPTH {
            return Err("toTOML: the value nests too deeply".to_owned());
        }
        match value {
            Go::Nil => return Err("toml: unsupported type: invalid".to_owned()),
            Go::Error(m) => return Err(m.to_string()),
            Go::Str(bytes) => quoted(&mut self.out, &lossy(bytes)),
            Go::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Go::Int(n) | Go::Int64(n) => self.out.push_str(&n.to_string()),
            Go::Float(f) => self.float(*f),
            // A json.Number is written as the int64 or float64 it holds.
            Go::Number(n) => match model::number_as_int_or_float(n) {
                Some(Ok(i)) => self.out.push_str(&i.to_string()),
                Some(Err(f)) => self.float(f),
                None => {
                    return Err(format!(
                        "toml: unable to convert {:?} to int64 or float64",
                        n.as_str()
                    ));
                }
            },
            Go::Time(t) => self
                .out
                .push_str(&layout::format(t, b"2006-01-02T15:04:05.999999999Z07:00")),
            Go::Semver(v) => quoted(&mut self.out, &model::semver_text(v)),
            Go::List(items) | Go::Strings(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.element(&go(item), depth + 1)?;
                }
                self.out.push(']');
            }
            Go::Map(_) | Go::NilMap | Go::AnyMap(_) | Go::Secret(_) | Go::Pki(_) => {
                let mut key = Vec::new();
                self.table(&mut key, value, true)?;
            }
        }
        Ok(())
    }

    /// Go's `FormatFloat(f, 'f', -1, 64)`, with `.0` added when it has no
    /// point; `nan`, `+inf`, `-inf`.
    fn float(&mut self, f: f64) {
        if f.is_nan() {
            self.out.push_str("nan");
        } else if f.is_infinite() {
            self.out.push_str(if f < 0.0 { "-inf" } else { "+inf" });
        } else {
            let text = format!("{f}");
            self.out.push_str(&text);
            if !text.contains('.') {
                self.out.push_str(".0");
            }
        }
    }
}

/// `toTOML`: the document, with surrounding whitespace trimmed.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    if name != "toTOML" {
        return None;
    }
    Some(arity(name, args, 1).and_then(|()| {
        let mut encoder = Encoder { out: String::new() };
        encoder.encode(&mut Vec::new(), &args[0])?;
        let text = encoder.out.trim().to_owned();
        budget::charge(0, [&Value::String(text.clone())]).map_err(|e| e.to_string())?;
        Ok(Value::String(text))
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::model::go;
    use super::super::session;
    use crate::render::budget::{Limits, Metered};

    /// As BurntSushi/toml 1.2 (Debian's) encodes the same map.
    #[test]
    fn tables_follow_plain_keys_and_maps_in_arrays_are_inline() {
        let _session = session::start();
        let _metered = Metered::start(Limits::FULL);
        let value = json!({
            "b": 1, "k x": "q\"\n", "n": null,
            "t": {"z": [1, {"i": {"j": 2}}], "u": {}},
            "arr": [{"n": 1}, {"n": 2}],
        });
        let out = super::call("toTOML", &[go(&value)]).unwrap().unwrap();
        assert_eq!(
            out,
            Value::String(
                "b = 1\n\"k x\" = \"q\\\"\\n\"\n\n[[arr]]\n  n = 1\n\n[[arr]]\n  n = 2\n\n[t]\n  z = [1, {i = {j = 2}}]\n  [t.u]"
                    .to_owned()
            )
        );
    }
}
