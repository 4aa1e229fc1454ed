//! consul-template's `parseYAML`: yaml.v2's `Unmarshal` into
//! `interface{}`. libyaml's events become yaml.v2's nodes (the first
//! document only), which decode as yaml.v2 decodes them: maps as
//! `map[interface{}]interface{}`, YAML 1.1's scalars resolved
//! ([`super::resolve`]), timestamps kept as text, `<<` merge keys,
//! aliases expanded (with yaml.v2's limit on aliasing, and the render's
//! budget charged for every node built).

use std::collections::HashMap;

use base64::Engine as _;
use libyaml_safer::{EventData, Parser, ScalarStyle};
use serde_json::{Map, Value};

use super::super::args::Out;
use super::super::model::{self, Go, go};
use super::resolve::{Resolved, resolve};
use crate::render::budget;

const STR: &str = "tag:yaml.org,2002:str";
const BOOL: &str = "tag:yaml.org,2002:bool";
const INT: &str = "tag:yaml.org,2002:int";
const FLOAT: &str = "tag:yaml.org,2002:float";
const TIMESTAMP: &str = "tag:yaml.org,2002:timestamp";
const BINARY: &str = "tag:yaml.org,2002:binary";
const MERGE: &str = "tag:yaml.org,2002:merge";

/// A node of the document (yaml.v2's `node`).
enum Node {
    Scalar {
        value: String,
        tag: String,
        /// Plain, with no tag: resolved by its text.
        implicit: bool,
    },
    Alias(usize),
    Mapping(Vec<usize>),
    Sequence(Vec<usize>),
}

struct Tree {
    nodes: Vec<Node>,
}

fn yaml_error(e: &libyaml_safer::Error) -> String {
    format!("yaml: {e}")
}

/// Reads the first document's nodes; `None` for a stream with none.
fn read(src: &[u8]) -> Result<Option<(Tree, usize)>, String> {
    let mut input: &[u8] = if src.is_empty() { b"\n" } else { src };
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut tree = Tree { nodes: Vec::new() };
    let mut anchors: HashMap<String, usize> = HashMap::new();
    // Open collections: the node's index.
    let mut open: Vec<usize> = Vec::new();
    let mut root = None;
    loop {
        let event = parser.parse().map_err(|e| yaml_error(&e))?;
        budget::charge(1, []).map_err(|e| e.to_string())?;
        let (node, anchor) = match event.data {
            EventData::StreamStart { .. } | EventData::DocumentStart { .. } => continue,
            EventData::StreamEnd | EventData::DocumentEnd { .. } => break,
            EventData::Alias { anchor } => {
                let target = *anchors
                    .get(&anchor)
                    .ok_or_else(|| format!("yaml: unknown anchor '{anchor}' referenced"))?;
                (Node::Alias(target), None)
            }
            EventData::Scalar {
                anchor,
                tag,
                value,
                plain_implicit,
                style,
                ..
            } => (
                Node::Scalar {
                    value,
                    tag: tag.unwrap_or_default(),
                    implicit: plain_implicit && style == ScalarStyle::Plain,
                },
                anchor,
            ),
            EventData::SequenceStart { anchor, .. } => (Node::Sequence(Vec::new()), anchor),
            EventData::MappingStart { anchor, .. } => (Node::Mapping(Vec::new()), anchor),
            EventData::SequenceEnd | EventData::MappingEnd => {
                open.pop();
                if open.is_empty() {
                    // The document's root is complete.
                    continue;
                }
                continue;
            }
        };
        let collection = matches!(node, Node::Sequence(_) | Node::Mapping(_));
        let index = tree.nodes.len();
        tree.nodes.push(node);
        if let Some(anchor) = anchor {
            anchors.insert(anchor, index);
        }
        match open.last() {
            Some(&parent) => match &mut tree.nodes[parent] {
                Node::Mapping(children) | Node::Sequence(children) => children.push(index),
                _ => unreachable!("only collections are open"),
            },
            None => root = root.or(Some(index)),
        }
        if collection {
            open.push(index);
        }
        if open.len() > super::MAX_DEPTH {
            return Err(format!(
                "parseYAML: the document nests deeper than {}",
                super::MAX_DEPTH
            ));
        }
    }
    Ok(root.map(|r| (tree, r)))
}

/// yaml.v2's `allowedAliasRatio`.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn allowed_alias_ratio(decoded: u64) -> f64 {
    if decoded <= 400_000 {
        0.99
    } else if decoded >= 4_000_000 {
        0.10
    } else {
        0.99 - 0.89 * ((decoded - 400_000) as f64 / 3.6e6)
    }
}

struct Decoder<'t> {
    tree: &'t Tree,
    decoded: u64,
    aliased: u64,
    alias_depth: u32,
    /// Aliases being expanded (an anchor that contains itself).
    expanding: Vec<usize>,
}

/// A decoded value: the model's JSON, and whether it is a map (for merge
/// keys and key checks).
impl Decoder<'_> {
    fn count(&mut self) -> Result<(), String> {
        self.decoded += 1;
        if self.alias_depth > 0 {
            self.aliased += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let ratio = self.aliased as f64 / self.decoded as f64;
        if self.aliased > 100 && self.decoded > 1000 && ratio > allowed_alias_ratio(self.decoded) {
            return Err("yaml: document contains excessive aliasing".to_owned());
        }
        budget::charge(1, []).map_err(|e| e.to_string())
    }

    fn value(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        self.count()?;
        if depth > super::MAX_DEPTH {
            return Err(format!(
                "parseYAML: the document nests deeper than {}",
                super::MAX_DEPTH
            ));
        }
        match &self.tree.nodes[n] {
            Node::Scalar {
                value,
                tag,
                implicit,
            } => scalar(value, tag, *implicit),
            Node::Alias(target) => {
                if self.expanding.contains(&n) {
                    return Err("yaml: anchor value contains itself".to_owned());
                }
                self.expanding.push(n);
                self.alias_depth += 1;
                let out = self.value(*target, depth + 1);
                self.alias_depth -= 1;
                self.expanding.pop();
                out
            }
            Node::Sequence(children) => {
                let mut items = Vec::with_capacity(children.len());
                for &c in children {
                    items.push(self.value(c, depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            Node::Mapping(_) => {
                let mut pairs = Vec::new();
                self.mapping(n, &mut pairs, depth)?;
                Ok(model::any_map(pairs))
            }
        }
    }

    /// Decodes the mapping `n` into `pairs` (a later key replaces an
    /// earlier equal one, merged maps included, in document order).
    fn mapping(
        &mut self,
        n: usize,
        pairs: &mut Vec<(Value, Value)>,
        depth: usize,
    ) -> Result<(), String> {
        let Node::Mapping(children) = &self.tree.nodes[n] else {
            return Err("yaml: map merge requires map or sequence of maps as the value".to_owned());
        };
        for kv in children.chunks(2) {
            let [k, v] = kv else { break };
            if self.is_merge(*k) {
                self.merge(*v, pairs, depth)?;
                continue;
            }
            let key = self.value(*k, depth + 1)?;
            if matches!(go(&key), Go::List(_) | Go::Map(_) | Go::AnyMap(_)) {
                return Err("yaml: invalid map key".to_owned());
            }
            let value = self.value(*v, depth + 1)?;
            set(pairs, key, value);
        }
        Ok(())
    }

    fn is_merge(&self, n: usize) -> bool {
        matches!(&self.tree.nodes[n], Node::Scalar { value, tag, implicit }
            if value == "<<" && (*implicit || tag == MERGE))
    }

    fn target(&self, n: usize) -> usize {
        match self.tree.nodes[n] {
            Node::Alias(t) => t,
            _ => n,
        }
    }

    fn merge(
        &mut self,
        n: usize,
        pairs: &mut Vec<(Value, Value)>,
        depth: usize,
    ) -> Result<(), String> {
        let want_map =
            || Err("yaml: map merge requires map or sequence of maps as the value".to_owned());
        match &self.tree.nodes[self.target(n)] {
            Node::Mapping(_) => self.aliased_mapping(n, pairs, depth),
            Node::Sequence(children) if matches!(self.tree.nodes[n], Node::Sequence(_)) => {
                // Earlier maps take precedence: merged last.
                for &c in children.iter().rev() {
                    if !matches!(self.tree.nodes[self.target(c)], Node::Mapping(_)) {
                        return want_map();
                    }
                    self.aliased_mapping(c, pairs, depth)?;
                }
                Ok(())
            }
            _ => want_map(),
        }
    }

    /// A mapping reached directly or through an alias, counted as yaml.v2
    /// counts it.
    fn aliased_mapping(
        &mut self,
        n: usize,
        pairs: &mut Vec<(Value, Value)>,
        depth: usize,
    ) -> Result<(), String> {
        self.count()?;
        let alias = matches!(self.tree.nodes[n], Node::Alias(_));
        if alias {
            if self.expanding.contains(&n) {
                return Err("yaml: anchor value contains itself".to_owned());
            }
            self.expanding.push(n);
            self.alias_depth += 1;
        }
        let target = self.target(n);
        let out = self.mapping(target, pairs, depth + 1);
        if alias {
            self.alias_depth -= 1;
            self.expanding.pop();
        }
        out
    }
}

/// Go's map assignment: an equal key (same type, same value,
/// [`model::deep_equal`]) is replaced.
fn set(pairs: &mut Vec<(Value, Value)>, key: Value, value: Value) {
    let same = |k: &Value| model::deep_equal(&go(k), &go(&key));
    if let Some(slot) = pairs.iter_mut().find(|(k, _)| same(k)) {
        slot.1 = value;
    } else {
        pairs.push((key, value));
    }
}

/// A scalar decoded into `interface{}`.
fn scalar(value: &str, tag: &str, implicit: bool) -> Result<Value, String> {
    let resolvable = matches!(tag, "" | STR | BOOL | INT | FLOAT | TIMESTAMP);
    if !implicit && tag.is_empty() || tag == STR {
        return Ok(Value::String(value.to_owned()));
    }
    if tag == BINARY {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "yaml: !!binary value contains invalid base64 data".to_owned())?;
        return Ok(model::string_value(&bytes));
    }
    if !resolvable {
        return Ok(Value::String(value.to_owned()));
    }
    let resolved = resolve(value);
    let mismatch = || {
        Err(format!(
            "yaml: cannot decode {} `{value}` as a {}",
            short(&resolved),
            tag.rsplit(':')
                .next()
                .map_or(String::new(), |t| format!("!!{t}"))
        ))
    };
    Ok(match (tag, &resolved) {
        // A timestamp stays its text, as yaml.v2 leaves it in `interface{}`.
        ("" | TIMESTAMP, Resolved::Timestamp) | ("", Resolved::Str) => {
            Value::String(value.to_owned())
        }
        ("" | BOOL, Resolved::Bool(b)) => Value::Bool(*b),
        ("", Resolved::Null) => Value::Null,
        ("" | INT, Resolved::Int(n)) => model::int(*n),
        (FLOAT, Resolved::Int(n)) => {
            #[allow(clippy::cast_precision_loss)] // Go's float64(v)
            model::float(*n as f64)
        }
        ("" | FLOAT, Resolved::Float(f)) => model::float(*f),
        ("" | INT, Resolved::Uint(_)) => {
            return Err(format!(
                "parseYAML: the integer {value} is beyond int64 (Go's uint64): not converted"
            ));
        }
        _ => return mismatch(),
    })
}

fn short(r: &Resolved) -> &'static str {
    match r {
        Resolved::Null => "!!null",
        Resolved::Bool(_) => "!!bool",
        Resolved::Int(_) | Resolved::Uint(_) => "!!int",
        Resolved::Float(_) => "!!float",
        Resolved::Timestamp => "!!timestamp",
        Resolved::Str => "!!str",
    }
}

/// `parseYAML`: `""` is an empty `map[string]interface{}`; a stream with
/// no document is `nil`.
pub(super) fn parse_yaml(src: &[u8]) -> Out {
    if src.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    budget::charge(u64::try_from(src.len() / 16).unwrap_or(u64::MAX), [])
        .map_err(|e| e.to_string())?;
    let Some((tree, root)) = read(src)? else {
        return Ok(Value::Null);
    };
    let mut decoder = Decoder {
        tree: &tree,
        decoded: 0,
        aliased: 0,
        alias_depth: 0,
        expanding: Vec::new(),
    };
    let value = decoder.value(root, 0)?;
    budget::charge(0, [&value]).map_err(|e| e.to_string())?;
    Ok(value)
}
