//! What a template may contain, checked on the parsed template.
//!
//! The check walks the tree the template engine built (every block, every
//! `{{else}}` branch, every parameter, hash value and subexpression), so it
//! sees exactly what the engine will render, however the source spells it
//! (`{{~ >p}}`, `{{ #*inline "p"}}`, whitespace, triple braces). It refuses
//! what can recurse without end or blow up the render:
//!
//! - partials (`{{> p}}`), partial blocks (`{{#> p}}…{{/p}}`), decorators
//!   (`{{* d}}`) and decorator blocks such as `{{#*inline "p"}}`: two inline
//!   partials that include each other recurse until the stack overflows;
//! - blocks nested deeper than [`MAX_BLOCK_DEPTH`] and subexpressions deeper
//!   than [`MAX_SUBEXPRESSION_DEPTH`] (the engine recurses per level);
//! - more than [`MAX_PARAMS_PER_TAG`] parameters and hash values in one tag
//!   (all are evaluated before a helper runs);
//! - more than [`MAX_TAGS_PER_TEMPLATE`] tags.
//!
//! The walk itself recurses once per level and stops at the limits, so it
//! is bounded however deep the parsed tree is.

use handlebars::template::{BlockParam, HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template, template::DecoratorTemplate};

use super::{MAX_BLOCK_DEPTH, MAX_PARAMS_PER_TAG, MAX_SUBEXPRESSION_DEPTH, MAX_TAGS_PER_TEMPLATE};

/// Where a refused construct is, for the message.
#[derive(Clone, Copy)]
struct At(usize, usize);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.0, self.1)
    }
}

/// Checks a parsed template; the error names the line, column and construct.
pub(super) fn check(template: &Template) -> Result<(), String> {
    let mut walk = Walk { tags: 0 };
    walk.template(template, 0, At(1, 1))
}

struct Walk {
    tags: usize,
}

impl Walk {
    fn template(&mut self, template: &Template, depth: usize, outer: At) -> Result<(), String> {
        for (i, element) in template.elements.iter().enumerate() {
            // Elements and their positions are recorded together; a block's
            // position is where it opens.
            let at = template.mapping.get(i).map_or(outer, |m| At(m.0, m.1));
            self.element(element, depth, at)?;
        }
        Ok(())
    }

    fn element(&mut self, element: &TemplateElement, depth: usize, at: At) -> Result<(), String> {
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.count_tag(at)?;
                self.helper(h, at, 0)
            }
            TemplateElement::HelperBlock(h) => {
                self.count_tag(at)?;
                if depth >= MAX_BLOCK_DEPTH {
                    return Err(format!(
                        "{at}: blocks are nested more than {MAX_BLOCK_DEPTH} deep"
                    ));
                }
                self.helper(h, at, 0)?;
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    self.template(inner, depth + 1, at)?;
                }
                Ok(())
            }
            TemplateElement::DecoratorExpression(d) => {
                Err(refused(at, "a decorator", "{{* …}}", d))
            }
            TemplateElement::DecoratorBlock(d) => Err(refused(
                at,
                "an inline partial or decorator block",
                "{{#* …}}",
                d,
            )),
            TemplateElement::PartialExpression(d) => Err(refused(at, "a partial", "{{> …}}", d)),
            TemplateElement::PartialBlock(d) => {
                Err(refused(at, "a partial block", "{{#> …}}…{{/…}}", d))
            }
            // A construct added by a later engine version: refuse it until
            // it is known to be safe.
            _ => Err(format!("{at}: unsupported template construct")),
        }
    }

    fn count_tag(&mut self, at: At) -> Result<(), String> {
        self.tags += 1;
        if self.tags > MAX_TAGS_PER_TEMPLATE {
            return Err(format!(
                "{at}: more than {MAX_TAGS_PER_TEMPLATE} {{{{…}}}} tags in one template"
            ));
        }
        Ok(())
    }

    /// A tag's name, parameters and hash; `nesting` is how many
    /// subexpressions it sits in.
    fn helper(&mut self, h: &HelperTemplate, at: At, nesting: usize) -> Result<(), String> {
        let count = h.params.len() + h.hash.len();
        if count > MAX_PARAMS_PER_TAG {
            return Err(format!(
                "{at}: a tag has {count} parameters and hash values; at most {MAX_PARAMS_PER_TAG} \
                 are allowed"
            ));
        }
        std::iter::once(&h.name)
            .chain(&h.params)
            .chain(h.hash.values())
            .try_for_each(|p| self.parameter(p, at, nesting))
    }

    fn parameter(&mut self, p: &Parameter, at: At, nesting: usize) -> Result<(), String> {
        let Parameter::Subexpression(sub) = p else {
            return Ok(());
        };
        if nesting >= MAX_SUBEXPRESSION_DEPTH {
            return Err(format!(
                "{at}: subexpressions are nested more than {MAX_SUBEXPRESSION_DEPTH} deep"
            ));
        }
        match sub.as_element() {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.helper(h, at, nesting + 1)
            }
            // The parser only builds expressions here; refuse anything else
            // rather than guess what the engine would do with it.
            _ => Err(format!("{at}: unsupported subexpression")),
        }
    }
}

fn refused(at: At, what: &str, syntax: &str, d: &DecoratorTemplate) -> String {
    let name = match &d.name {
        Parameter::Name(n) => format!(" `{n}`"),
        _ => String::new(),
    };
    format!(
        "{at}: {what}{name} ({syntax}) is not supported: partials and decorators can recurse \
         without end"
    )
}

/// Bytes a parsed template holds on the heap, counted from its tree:
/// every node's allocation (the engine's `HelperTemplate` is 392 bytes,
/// a parameter 56), every vector's and map's capacity, every string's, each
/// rounded up as the C allocator does (a header of 8 bytes, 16-byte
/// granules, at least 32 bytes: a one-letter name takes 32). The template
/// must have passed [`check`] (its depth is bounded).
pub(super) fn held_bytes(template: &Template) -> u64 {
    let mut held = Held(0);
    held.template(template);
    held.0
}

/// The heap footprint of one allocation of `bytes`, as glibc's malloc
/// serves it.
fn alloc(bytes: usize) -> u64 {
    if bytes == 0 {
        return 0;
    }
    ((bytes as u64 + 8).div_ceil(16) * 16).max(32)
}

fn vec_of<T>(capacity: usize) -> u64 {
    alloc(capacity * std::mem::size_of::<T>())
}

struct Held(u64);

impl Held {
    fn template(&mut self, t: &Template) {
        self.0 += vec_of::<TemplateElement>(t.elements.capacity())
            + vec_of::<handlebars::template::TemplateMapping>(t.mapping.capacity())
            + t.name.as_ref().map_or(0, |n| alloc(n.capacity()));
        for element in &t.elements {
            self.element(element);
        }
    }

    fn element(&mut self, element: &TemplateElement) {
        match element {
            TemplateElement::RawString(s) | TemplateElement::Comment(s) => {
                self.0 += alloc(s.capacity());
            }
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                self.0 += alloc(std::mem::size_of::<HelperTemplate>());
                self.helper(h);
            }
            // Refused by `check`; counted as a node if ever kept.
            _ => self.0 += alloc(std::mem::size_of::<DecoratorTemplate>()),
        }
    }

    fn helper(&mut self, h: &HelperTemplate) {
        self.parameter(&h.name);
        self.0 += vec_of::<Parameter>(h.params.capacity());
        for p in &h.params {
            self.parameter(p);
        }
        if h.hash.capacity() > 0 {
            // hashbrown: a power of two of buckets, eight per seven
            // entries, a control byte each plus a group of sixteen.
            let buckets = (h.hash.capacity() * 8 / 7).next_power_of_two();
            self.0 += alloc(buckets * (std::mem::size_of::<(String, Parameter)>() + 1) + 16);
        }
        for (key, value) in &h.hash {
            self.0 += alloc(key.capacity());
            self.parameter(value);
        }
        match &h.block_param {
            Some(BlockParam::Single(p)) => self.parameter(p),
            Some(BlockParam::Pair((a, b))) => {
                self.parameter(a);
                self.parameter(b);
            }
            _ => {}
        }
        for inner in [&h.template, &h.inverse].into_iter().flatten() {
            self.template(inner);
        }
    }

    fn parameter(&mut self, p: &Parameter) {
        match p {
            Parameter::Name(n) => self.0 += alloc(n.capacity()),
            Parameter::Path(Path::Relative((segs, raw))) => {
                self.0 += alloc(raw.capacity()) + vec_of::<PathSeg>(segs.capacity());
                for seg in segs {
                    if let PathSeg::Named(n) = seg {
                        self.0 += alloc(n.capacity());
                    }
                }
            }
            Parameter::Path(Path::Local((_, name, raw))) => {
                self.0 += alloc(name.capacity()) + alloc(raw.capacity());
            }
            Parameter::Literal(json) => self.0 += json_bytes(json),
            Parameter::Subexpression(sub) => {
                self.0 += alloc(std::mem::size_of::<TemplateElement>());
                self.element(sub.as_element());
            }
            // A kind of parameter added by a later engine version.
            _ => self.0 += alloc(std::mem::size_of::<Parameter>()),
        }
    }
}

/// Heap bytes of a JSON literal (its own value is inline in its parent):
/// strings and numbers (the parser keeps a number's digits as text) their
/// allocation, arrays their vector, objects about 128 bytes per entry
/// (a B-tree node holds eleven entries of 56 bytes and is at least half
/// full) plus their keys.
fn json_bytes(value: &serde_json::Value) -> u64 {
    use serde_json::Value;
    let mut total = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::Null | Value::Bool(_) => 0,
            Value::Number(n) => alloc(n.as_str().len()),
            Value::String(s) => alloc(s.capacity()),
            Value::Array(items) => {
                stack.extend(items);
                vec_of::<Value>(items.capacity())
            }
            Value::Object(map) => {
                stack.extend(map.values());
                map.keys().map(|k| 128 + alloc(k.capacity())).sum()
            }
        };
    }
    total
}
