//! consul-template's `toYAML`: yaml.v2's `Marshal` (its choice of events
//! and scalar styles, `encode.go`) over libyaml's emitter, trimmed.

use libyaml_safer::{Emitter, Encoding, Event, MappingStyle, ScalarStyle, SequenceStyle};
use serde_json::Value;

use super::super::args::{Out, lossy};
use super::super::fmt;
use super::super::model::{self, Go, go};
use super::resolve::{Key, Resolved, is_base60_float, key_order, resolve};
use crate::render::budget;

const BINARY: &str = "tag:yaml.org,2002:binary";

struct Encoder<'w> {
    emitter: Emitter<'w>,
}

impl Encoder<'_> {
    fn emit(&mut self, event: Event) -> Result<(), String> {
        self.emitter.emit(event).map_err(|e| format!("toYAML: {e}"))
    }

    fn scalar(&mut self, value: &str, tag: Option<&str>, style: ScalarStyle) -> Result<(), String> {
        budget::charge(1 + u64::try_from(value.len() / 16).unwrap_or(u64::MAX), [])
            .map_err(|e| e.to_string())?;
        let implicit = tag.is_none();
        self.emit(Event::scalar(None, tag, value, implicit, implicit, style))
    }

    fn plain(&mut self, value: &str) -> Result<(), String> {
        self.scalar(value, None, ScalarStyle::Plain)
    }

    /// `stringv`.
    fn string(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Ok(s) = std::str::from_utf8(bytes) else {
            // Not UTF-8: base64 under `!!binary`, plain unless it spans
            // lines.
            let encoded = binary(bytes);
            let style = if encoded.contains('\n') {
                ScalarStyle::Literal
            } else {
                ScalarStyle::Plain
            };
            return self.scalar(&encoded, Some(BINARY), style);
        };
        let can_use_plain = resolve(s) == Resolved::Str && !is_base60_float(s);
        let style = if s.contains('\n') {
            ScalarStyle::Literal
        } else if can_use_plain {
            ScalarStyle::Plain
        } else {
            ScalarStyle::DoubleQuoted
        };
        self.scalar(s, None, style)
    }

    fn float(&mut self, f: f64) -> Result<(), String> {
        let text = String::from_utf8_lossy(&fmt::sprint(&[Go::Float(f)], false)?).into_owned();
        self.plain(match text.as_str() {
            "+Inf" => ".inf",
            "-Inf" => "-.inf",
            "NaN" => ".nan",
            other => other,
        })
    }

    fn mapping(&mut self, mut entries: Vec<(Go<'_>, Go<'_>)>, depth: usize) -> Result<(), String> {
        entries.sort_by(|a, b| key_order(key_of(&a.0), key_of(&b.0)));
        self.emit(Event::mapping_start(None, None, true, MappingStyle::Block))?;
        for (k, v) in &entries {
            self.value(k, depth + 1)?;
            self.value(v, depth + 1)?;
        }
        self.emit(Event::mapping_end())
    }

    fn sequence(&mut self, items: &[Value], depth: usize) -> Result<(), String> {
        self.emit(Event::sequence_start(
            None,
            None,
            true,
            SequenceStyle::Block,
        ))?;
        for item in items {
            self.value(&go(item), depth + 1)?;
        }
        self.emit(Event::sequence_end())
    }

    /// `marshal` of one value.
    fn value(&mut self, value: &Go<'_>, depth: usize) -> Result<(), String> {
        if depth > super::MAX_DEPTH {
            return Err("toYAML: the value nests too deeply".to_owned());
        }
        match value {
            Go::Nil => self.plain("null"),
            Go::Error(m) => Err(m.to_string()),
            Go::Bool(b) => self.plain(if *b { "true" } else { "false" }),
            Go::Int(n) | Go::Int64(n) => self.plain(&n.to_string()),
            Go::Float(f) => self.float(*f),
            // yaml.v2 writes a json.Number as the int64 or float64 it
            // holds, else as its text.
            Go::Number(n) => match model::number_as_int_or_float(n) {
                Some(Ok(i)) => self.plain(&i.to_string()),
                Some(Err(f)) => self.float(f),
                None => self.string(n.as_str().as_bytes()),
            },
            Go::Str(bytes) => self.string(bytes),
            Go::Map(map) => self.mapping(
                map.iter()
                    .map(|(k, v)| (Go::Str(k.as_bytes().into()), go(v)))
                    .collect(),
                depth,
            ),
            Go::NilMap => self.mapping(Vec::new(), depth),
            Go::AnyMap(pairs) => self.mapping(model::pairs(pairs).collect(), depth),
            Go::List(items) | Go::Strings(items) => self.sequence(items, depth),
            // time.Time is written as RFC 3339 with nanoseconds, plain.
            Go::Time(t) => self.scalar(
                &super::super::clock::layout::format(t, b"2006-01-02T15:04:05.999999999Z07:00"),
                None,
                ScalarStyle::Plain,
            ),
            // A TextMarshaler: its text, as a string.
            Go::Semver(v) => self.string(model::semver_text(v).as_bytes()),
            Go::Secret(_) | Go::Pki(_) => Err(format!(
                "toYAML of a {} is not converted: give it the secret's .Data",
                model::type_name(value)
            )),
        }
    }
}

/// A key of a map from `parseYAML` as `keyList` sees it.
fn key_of<'a>(k: &'a Go<'_>) -> Key<'a> {
    match k {
        Go::Bool(b) => Key::Bool(*b),
        Go::Int(n) | Go::Int64(n) => Key::Int(*n),
        Go::Float(f) => Key::Float(*f),
        Go::Str(s) => std::str::from_utf8(s).map_or(Key::Nil, Key::Str),
        _ => Key::Nil,
    }
}

/// yaml.v2's `encodeBase64`: standard base64, in lines of 70 characters
/// when longer than 70.
fn binary(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    if encoded.len() <= 70 {
        return encoded;
    }
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 70 + 1);
    for chunk in encoded.as_bytes().chunks(70) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// `toYAML`: the document, with surrounding whitespace trimmed.
pub(super) fn to_yaml(value: &Go<'_>) -> Out {
    let mut out = Vec::new();
    {
        let mut encoder = Encoder {
            emitter: Emitter::new(),
        };
        encoder.emitter.set_output_string(&mut out);
        encoder.emitter.set_unicode(true);
        encoder.emit(Event::stream_start(Encoding::Utf8))?;
        encoder.emit(Event::document_start(None, &[], true))?;
        encoder.value(value, 0)?;
        encoder.emit(Event::document_end(true))?;
        encoder.emit(Event::stream_end())?;
        encoder
            .emitter
            .flush()
            .map_err(|e| format!("toYAML: {e}"))?;
    }
    let text = lossy(&out);
    // `bytes.TrimSpace`: `str::trim` trims Unicode's White_Space, the
    // characters Go's `unicode.IsSpace` names.
    Ok(model::string_value(text.trim().as_bytes()))
}
