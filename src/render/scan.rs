//! What a template's source says about the tree the engine will build from
//! it, found without parsing: one pass over the bytes, without allocating.
//!
//! The engine's parse is where compiling spends memory: a dense tag such as
//! `{{a (b c c c c c c c)}}` becomes about a hundred times its size in parse
//! tokens and tree nodes. Every node the engine builds inside a tag (a
//! parameter, a hash value, a subexpression, a path segment, an element of
//! an array or object literal) starts at or right after a byte that is not
//! part of a name: whitespace or punctuation. So the number of such bytes
//! inside tags, the template's **units**, bounds its nodes, and text between
//! tags costs only its own bytes (one string per run).
//!
//! Finding where tags end needs care: `}}` inside a string literal, an
//! object literal or a `[...]` path segment does not end a tag, and
//! `\{{` is not a tag. The scan follows the engine's grammar for these
//! (strings with their escapes, literals, path segments, comments, raw
//! blocks, escapes). Where it meets something it does not model exactly,
//! it counts the rest of the source as if it were inside a tag: the bound
//! only ever gets larger, never smaller, than the engine's real count.

/// The scan of one template's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Shape {
    /// Bytes of source.
    pub(super) bytes: u64,
    /// Bytes inside tags that are not part of a name (see the module
    /// docs): an upper bound of the nodes the engine builds.
    pub(super) units: u64,
    /// Every `{{` in the source, escaped or not: tags, and the places where
    /// the engine splits text.
    pub(super) marks: u64,
    /// Whether every tag's end was found exactly; when not, `units`
    /// counts the rest of the source from the first tag it could not
    /// follow.
    pub(super) exact: bool,
}

/// Scans a template's source.
pub(super) fn shape(source: &str) -> Shape {
    let b = source.as_bytes();
    let mut units_in_tags = 0;
    let exact = tags(source, |tag| units_in_tags += units(&b[tag]));
    Shape {
        bytes: b.len() as u64,
        units: units_in_tags,
        marks: source.matches("{{").count() as u64,
        exact,
    }
}

/// Calls `on_tag` with the span of every tag (comments excepted), in
/// order. Returns whether every tag's end was found exactly; if not, the
/// last span runs from the tag the scan could not follow to the end.
fn tags(source: &str, mut on_tag: impl FnMut(std::ops::Range<usize>)) -> bool {
    let b = source.as_bytes();
    let mut i = 0;
    while let Some(p) = find(b, i, b"{{") {
        if escaped(b, i, p) {
            // `\{{` (and `\{{{{`) is text.
            i = p + 2;
            if b[i..].starts_with(b"{{") {
                i += 2;
            }
            continue;
        }
        if b[p..].starts_with(b"{{!") {
            // Comments hold no nodes.
            match comment_end(b, p) {
                Some(end) => i = end,
                None => break,
            }
            continue;
        }
        let Some(end) = tag_end(b, p) else {
            on_tag(p..b.len());
            return false;
        };
        on_tag(p..end);
        i = end;
        if b[p..].starts_with(b"{{{{") && !is_raw_end(b, p) {
            // A raw block's text runs to the next unescaped `{{{{`.
            i = raw_text_end(b, i);
        }
    }
    true
}

/// Whether `b` is inside a name (the grammar's `symbol_char`: letters,
/// digits, `-`, `_`, `$`, `:` and everything beyond ASCII).
fn is_symbol(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$' | b':') || !b.is_ascii()
}

/// The bytes that are not part of a name.
fn units(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| !is_symbol(b)).count() as u64
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}

/// Whether the `{{` at `p` is escaped: preceded by exactly one backslash
/// (two or more are themselves an escape, and the tag is real).
fn escaped(b: &[u8], text_start: usize, p: usize) -> bool {
    let run = b[text_start..p]
        .iter()
        .rev()
        .take_while(|&&c| c == b'\\')
        .count();
    run == 1
}

/// Where the comment opening at `p` ends: `{{!--` runs to the first
/// `--}}`, else (or `{{!` alone) to the first `}}`. `None` if it does not
/// end (the template does not parse).
fn comment_end(b: &[u8], p: usize) -> Option<usize> {
    let j = skip_space(b, p + 3);
    if b[j..].starts_with(b"--")
        && let Some(end) = find(b, j + 2, b"--}}")
    {
        return Some(end + 4);
    }
    find(b, p + 3, b"}}").map(|end| end + 2)
}

fn is_raw_end(b: &[u8], p: usize) -> bool {
    let mut j = skip_space(b, p + 4);
    if b.get(j) == Some(&b'~') {
        j = skip_space(b, j + 1);
    }
    b.get(j) == Some(&b'/')
}

/// The end of a raw block's text starting at `i`: the next `{{{{` not
/// escaped by a single backslash (the end tag), or the end of the source.
fn raw_text_end(b: &[u8], mut i: usize) -> usize {
    let start = i;
    while let Some(p) = find(b, i, b"{{{{") {
        if escaped(b, start, p) {
            i = p + 4;
            continue;
        }
        return p;
    }
    b.len()
}

/// Where the tag opening at `p` (on `{{`) ends, just past its closing
/// braces; `None` where the scan cannot tell exactly.
fn tag_end(b: &[u8], p: usize) -> Option<usize> {
    let mut i = p + 2;
    // Braces opened by the tag itself: `{{{`, `{{{{`, `{{~{`.
    let mut depth = 0usize;
    // The last byte that was not whitespace, to tell a `[` that starts a
    // path segment from one that starts an array literal.
    let mut prev = b'{';
    while i < b.len() {
        let c = b[i];
        match c {
            b'}' => {
                if depth > 0 {
                    depth -= 1;
                    i += 1;
                } else if b.get(i + 1) == Some(&b'}') {
                    return Some(i + 2);
                } else {
                    return None;
                }
            }
            b'{' if opener(prev) => {
                depth += 1;
                i += 1;
            }
            b'"' | b'\'' => i = string_end(b, i)?,
            b'[' if path_segment_follows(prev) => i = find(b, i, b"]")? + 1,
            b'[' | b'{' => {
                i = match literal_end(b, i) {
                    Some(end) => end,
                    // Not a literal: the grammar reads a path segment.
                    None if c == b'[' => find(b, i, b"]")? + 1,
                    None => return None,
                };
            }
            _ => i += 1,
        }
        if !is_space(c) {
            prev = c;
        }
    }
    None
}

/// Whether a `{` after `prev` belongs to the tag's opening (`{{{`,
/// `{{~{`) rather than to an object literal.
fn opener(prev: u8) -> bool {
    matches!(prev, b'{' | b'~')
}

/// Whether a `[` after `prev` can only start a path segment: after a path
/// separator, `@`, or where the grammar expects a name (after the tag's
/// opening punctuation or a `(`).
fn path_segment_follows(prev: u8) -> bool {
    matches!(
        prev,
        b'.' | b'/' | b'@' | b'{' | b'~' | b'#' | b'^' | b'>' | b'*' | b'&' | b'('
    )
}

/// The end of the string literal opening at `i` (on its quote). A single
/// quoted string holding a backslash is left to the engine (`None`): the
/// grammar reads one differently in partial names.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote == b'\'' => return None,
            b'\\' => j += 2,
            c if c == quote => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Deepest literal the scan follows; deeper ones are left to the engine.
const MAX_LITERAL_DEPTH: usize = 64;

/// What the literal scan expects next.
#[derive(Clone, Copy)]
enum Expect {
    /// A value.
    Value,
    /// An object's `"key": value`.
    Entry,
}

/// The end of the JSON literal (the grammar's `literal`) starting at `i`,
/// or `None` if none starts there. Arrays and objects nest; whitespace is
/// allowed between their parts, and (as in the grammar) before a first
/// element that is absent: `[,1]`.
fn literal_end(b: &[u8], i: usize) -> Option<usize> {
    // The closing byte of each open container.
    let mut open = [0u8; MAX_LITERAL_DEPTH];
    let mut depth = 0;
    let mut j = i;
    let mut expect = Expect::Value;
    loop {
        j = skip_space(b, j);
        if let Expect::Entry = expect {
            j = skip_space(b, json_string_end(b, j)?);
            if b.get(j) != Some(&b':') {
                return None;
            }
            j = skip_space(b, j + 1);
        }
        j = match *b.get(j)? {
            bracket @ (b'[' | b'{') => {
                if depth == MAX_LITERAL_DEPTH {
                    return None;
                }
                let close = if bracket == b'[' { b']' } else { b'}' };
                let inside = skip_space(b, j + 1);
                if b.get(inside) == Some(&close) {
                    inside + 1
                } else {
                    open[depth] = close;
                    depth += 1;
                    // The first element may be absent: `[,1]`.
                    j = if b.get(inside) == Some(&b',') {
                        inside + 1
                    } else {
                        inside
                    };
                    expect = if bracket == b'[' {
                        Expect::Value
                    } else {
                        Expect::Entry
                    };
                    continue;
                }
            }
            b'"' | b'\'' => json_string_end(b, j)?,
            _ => scalar_end(b, j)?,
        };
        // After a value: a separator, closes, or the end.
        loop {
            if depth == 0 {
                return Some(j);
            }
            let close = open[depth - 1];
            j = skip_space(b, j);
            match *b.get(j)? {
                b',' => {
                    j += 1;
                    expect = if close == b']' {
                        Expect::Value
                    } else {
                        Expect::Entry
                    };
                    break;
                }
                byte if byte == close => {
                    depth -= 1;
                    j += 1;
                }
                _ => return None,
            }
        }
    }
}

/// The grammar's whitespace (not form feed or vertical tab).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(b: &[u8], mut j: usize) -> usize {
    while b.get(j).copied().is_some_and(is_space) {
        j += 1;
    }
    j
}

/// A string literal as the grammar reads it inside a literal: JSON escapes
/// only (anything else does not parse).
fn json_string_end(b: &[u8], i: usize) -> Option<usize> {
    let quote = *b.get(i)?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => match b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'\'' if quote == b'\'' => j += 2,
                b'u' if b.get(j + 2..j + 6)?.iter().all(u8::is_ascii_hexdigit) => j += 6,
                _ => return None,
            },
            c if c == quote => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// A number, `null`, `true` or `false`, not followed by a name character.
fn scalar_end(b: &[u8], i: usize) -> Option<usize> {
    let rest = &b[i..];
    let end = if let Some(word) = [&b"null"[..], b"true", b"false"]
        .into_iter()
        .find(|w| rest.starts_with(w))
    {
        i + word.len()
    } else {
        number_end(b, i)?
    };
    (!b.get(end).copied().is_some_and(is_symbol)).then_some(end)
}

/// The grammar's `number_literal`: `-? digit+ .? digit* (E -? digit+)?`.
fn number_end(b: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        let start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        (j, j > start)
    };
    let mut j = i + usize::from(b.get(i) == Some(&b'-'));
    let (after, any) = digits(j);
    if !any {
        return None;
    }
    j = after;
    if b.get(j) == Some(&b'.') {
        j = digits(j + 1).0;
    }
    if b.get(j) == Some(&b'E') {
        let k = j + 1 + usize::from(b.get(j + 1) == Some(&b'-'));
        let (after, any) = digits(k);
        if any {
            j = after;
        }
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::{shape, tags};

    /// The tags the engine's grammar finds, for a template it parses.
    fn engine_tags(source: &str) -> Option<Vec<std::ops::Range<usize>>> {
        super::super::guard::tag_spans(source)
    }

    /// Checks the scan against the engine's grammar on `source`: where the
    /// grammar parses it, every tag the grammar sees is one the scan saw
    /// (exactly, when the scan says it was exact), and the scan's units are
    /// at least those inside the grammar's tags.
    fn agrees(source: &str) -> bool {
        let Some(expected) = engine_tags(source) else {
            return false;
        };
        let mut seen = Vec::new();
        let exact = tags(source, |tag| seen.push(tag));
        let b = source.as_bytes();
        let inside: u64 = expected.iter().map(|t| super::units(&b[t.clone()])).sum();
        assert!(
            shape(source).units >= inside,
            "{source:?}: scanned {} units, the grammar's tags hold {inside}",
            shape(source).units
        );
        if exact {
            assert_eq!(seen, expected, "{source:?}");
        } else {
            let fallback = seen.last().expect("a fallback span").start;
            for tag in &expected {
                assert!(
                    tag.start >= fallback || seen.contains(tag),
                    "{source:?}: the grammar's tag {tag:?} was not scanned ({seen:?})"
                );
            }
        }
        true
    }

    #[test]
    fn tag_ends_are_found_where_the_grammar_finds_them() {
        for source in [
            "plain text",
            "{{a}}",
            "{{#with (secret \"kv/x\")}}{{data.a}}{{/with}}",
            "{{a \"}} c c c\"}} text",
            "{{a '}} c c' b}} text",
            "{{a [\"]\", \"}} c c\"]}} text",
            "{{a [1,2,[3]] b}}{{c}}",
            "{{a [,1]}}",
            "{{a x.[}}y z] b}}",
            "{{a x.[a\"b] \"}} c c c\"}}",
            "{{[a b]}} {{x ([c d])}}",
            "{{a {\"k\":{\"l\":\"}}\"}} }} after",
            "{{a {}}}",
            "{{{a}}} {{{{raw}}}}{{x \"}}{{{{/raw}}}}{{b \"}} c\"}}",
            "{{{{raw}}}} \\{{{{ {{{{/raw}}}}",
            "{{!-- a }} {{\"--}}{{x \"}} c c c\"}}",
            "{{! a }}{{b}}",
            "\\{{a \"{{y \"}} c c c\"}}",
            "\\\\{{a}}",
            "{{#if a}}x{{else if b}}y{{else}}z{{/if}}",
            "{{~a~}} {{~#if b~}}{{~/if~}}",
            "{{#each a as |x y|}}{{x}}{{/each}}",
            "{{a b=\"c}}\" d=(e f)}}",
            "{{a 1.5E-3 -2 null true false}}",
            "{{a @root.b ../c this.d ./e @index}}",
            "{{& a}} {{ {b} }}",
            "{{a \"\\\"}}\"}}",
            "{{a '\\'}} c c'}}",
            "{{> p}} {{#> q}}x{{/q}} {{#*inline \"n\"}}y{{/inline}}",
        ] {
            assert!(agrees(source), "the grammar does not parse {source:?}");
        }
    }

    /// The `template_render` fuzz seeds, and the walkthrough's template.
    #[test]
    fn the_fuzz_seeds_agree_with_the_grammar() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/template_render");
        let mut parsed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            if let Ok(source) = std::fs::read_to_string(entry.unwrap().path())
                && agrees(&source)
            {
                parsed += 1;
            }
        }
        assert!(parsed >= 5, "{parsed} seeds parsed");
    }

    /// Random templates built from the pieces that make tag ends hard to
    /// find: the scan agrees with the grammar on every one it parses.
    #[test]
    fn random_templates_agree_with_the_grammar() {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{{{",
            "}}}",
            "{{{{",
            "}}}}",
            "{{/",
            "{{#",
            "{{!",
            "{{!--",
            "--}}",
            "{{else}}",
            "\\",
            "\"",
            "'",
            "[",
            "]",
            "{",
            "}",
            "(",
            ")",
            " ",
            "\n",
            "a",
            "b",
            "c.d",
            "=",
            "|",
            "as",
            "1",
            ",",
            ":",
            "@",
            "~",
            "x y",
            "{{a ",
            "\"}}\"",
            "[\"]\"]",
            "{\"k\":1}",
            "(a b)",
            "raw",
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let n = rng.random_range(1..16);
            let source: String = (0..n)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            if agrees(&source) {
                parsed += 1;
            }
        }
        assert!(parsed > 1000, "only {parsed} random templates parsed");
        eprintln!("{parsed} random templates parsed");
    }
}
