//! consul-template's `toYAML` and `parseYAML`, which are gopkg.in/yaml.v2
//! (itself a port of libyaml): its resolution of plain scalars and order
//! of keys ([`resolve`]), its `Marshal` ([`emit`]) and `Unmarshal` into
//! `interface{}` ([`parse`]), over `libyaml-safer`'s emitter and parser.

mod emit;
mod parse;
mod resolve;

use super::args::{Out, arity, s};
use super::model::Go;

/// How deep a document or a value may nest (a render's stack stays
/// bounded whatever a tenant's data holds).
const MAX_DEPTH: usize = 256;

/// `toYAML` and `parseYAML`; `None` for another name.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "toYAML" => arity(name, args, 1).and_then(|()| emit::to_yaml(&args[0])),
        "parseYAML" => arity(name, args, 1).and_then(|()| parse::parse_yaml(s(&args[0])?)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use serde_json::Value;

    use super::super::model::{Go, go};
    use super::super::session;
    use super::resolve::{Key, Resolved, key_order, resolve};
    use crate::render::budget::{Limits, Metered};

    /// As yaml.v2 2.4 (Debian's, Go 1.19) decodes `v: <scalar>`.
    #[test]
    fn plain_scalars_resolve_as_yaml_v2s() {
        use Resolved::{Bool, Float, Int, Null, Str, Timestamp, Uint};
        for (text, want) in [
            ("yes", Bool(true)),
            ("Off", Bool(false)),
            ("y", Bool(true)),
            ("~", Null),
            ("", Null),
            ("null", Null),
            ("0x1F", Int(31)),
            ("017", Int(15)),
            ("0o17", Int(15)),
            ("08", Float(8.0)),
            ("1_000", Int(1000)),
            ("-0b101", Int(-5)),
            ("+5", Int(5)),
            ("1e3", Float(1000.0)),
            ("1.5", Float(1.5)),
            (".5", Float(0.5)),
            (".inf", Float(f64::INFINITY)),
            ("-.Inf", Float(f64::NEG_INFINITY)),
            ("2024-01-01", Timestamp),
            ("2024-1-2 3:04:05", Timestamp),
            ("1:20", Str),
            ("9223372036854775808", Uint(9_223_372_036_854_775_808)),
            ("18446744073709551616", Float(1.844_674_407_370_955_2e19)),
            ("abc", Str),
            ("0.", Float(0.0)),
            ("1e", Str),
            ("+.5", Float(0.5)),
        ] {
            assert_eq!(resolve(text), want, "{text:?}");
        }
        assert!(matches!(resolve(".nan"), Float(f) if f.is_nan()));
    }

    /// As yaml.v2 2.4 orders a map's keys when it writes them.
    #[test]
    fn keys_sort_as_yaml_v2s() {
        let mut keys = vec![
            "b", "a10", "a2", "A", "_", "1", "10", "9", "a02", "a002", "\u{e9}", "a", "ab", "a-1",
        ];
        keys.sort_by(|a, b| key_order(Key::Str(a), Key::Str(b)));
        assert_eq!(
            keys,
            [
                "_", "1", "9", "10", "A", "a", "a-1", "a2", "a02", "a002", "a10", "ab", "b",
                "\u{e9}"
            ]
        );
    }

    fn run(name: &str, arg: &str) -> Result<Value, String> {
        super::call(name, &[Go::Str(arg.as_bytes().into())]).expect("a YAML function")
    }

    #[test]
    fn a_document_round_trips() {
        let _session = session::start();
        let _metered = Metered::start(Limits::FULL);
        let parsed = run("parseYAML", "b: [1, yes, ~]\na: {c: 'x: y'}\n").unwrap();
        assert!(matches!(go(&parsed), Go::AnyMap(p) if p.len() == 2));
        let written = super::call("toYAML", &[go(&parsed)]).unwrap().unwrap();
        assert_eq!(
            written,
            Value::String("a:\n  c: 'x: y'\nb:\n- 1\n- true\n- null".to_owned())
        );
        assert_eq!(
            run("parseYAML", "").unwrap(),
            Value::Object(serde_json::Map::new())
        );
        assert_eq!(run("parseYAML", "# only a comment").unwrap(), Value::Null);
        assert!(run("parseYAML", "a: [1").is_err());
        assert!(run("parseYAML", "a: *nowhere").is_err());
    }

    /// A tenant's document cannot make a render expand aliases without
    /// bound (a "billion laughs"), nor nest deeper than the stack allows.
    #[test]
    fn hostile_documents_are_bounded() {
        let _session = session::start();
        let _metered = Metered::start(Limits::FULL);
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            let refs = vec![format!("*a{p}"); 10].join(", ");
            let _ = writeln!(laughs, "a{i}: &a{i} [{refs}]");
        }
        let err = run("parseYAML", &laughs).unwrap_err();
        assert!(
            err.contains("aliasing") || err.contains("budget") || err.contains("limit"),
            "{err}"
        );
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            run("parseYAML", &deep)
                .unwrap_err()
                .contains("nests deeper")
        );
        let deep_map = (0..5_000).fold(String::new(), |mut s, i| {
            s.push_str(&" ".repeat(i));
            s.push_str("k:\n");
            s
        });
        assert!(run("parseYAML", &deep_map).is_err());
    }
}
