//! consul-template's `regexMatch` and `regexReplaceAll` (and Sprig's
//! `regexMatch`, `regexFind`, `regexFindAll`, `regexReplaceAll`,
//! `regexReplaceAllLiteral`, `regexSplit`, `regexQuoteMeta`): Go's
//! `regexp` (RE2) with the `regex` crate, whose syntax and leftmost-first
//! matching are RE2's, but whose `\d`, `\w`, `\s` and `\b` are Unicode:
//! a pattern is translated to Go's ASCII meaning first.

use regex::{Regex, RegexBuilder};

/// Most bytes of a pattern, and of the compiled program.
const MAX_PATTERN: usize = 4096;
const MAX_PROGRAM: usize = 1 << 20;

/// Go's Perl classes, which are ASCII.
fn perl_class(c: char, in_class: bool) -> Option<&'static str> {
    Some(match (c, in_class) {
        ('d', false) => "[0-9]",
        ('D', false) => "[^0-9]",
        ('w', false) => "[0-9A-Za-z_]",
        ('W', false) => "[^0-9A-Za-z_]",
        ('s', false) => "[\\t\\n\\f\\r ]",
        ('S', false) => "[^\\t\\n\\f\\r ]",
        ('b', false) => "(?-u:\\b)",
        ('B', false) => "(?-u:\\B)",
        ('d', true) => "0-9",
        ('w', true) => "0-9A-Za-z_",
        ('s', true) => "\\t\\n\\f\\r ",
        _ => return None,
    })
}

/// The pattern with Go's meaning of the Perl classes.
fn translate(pattern: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    return Err(
                        "error parsing regexp: trailing backslash at end of expression".to_owned(),
                    );
                };
                match perl_class(next, in_class) {
                    Some(ascii) => out.push_str(ascii),
                    // A negated class inside brackets has no ASCII spelling
                    // in a bracket; Unicode's differs from Go's only
                    // outside ASCII.
                    None if in_class && matches!(next, 'D' | 'W' | 'S') => {
                        return Err(format!(
                            "\\{next} inside brackets is not converted: write the ASCII ranges"
                        ));
                    }
                    None => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            '[' if in_class && chars.peek() == Some(&':') => {
                // A POSIX class, `[:alpha:]`, ASCII in both.
                out.push('[');
                for p in chars.by_ref() {
                    out.push(p);
                    if p == ']' {
                        break;
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Compiles a Go pattern.
pub(in crate::render) fn compile(pattern: &[u8]) -> Result<Regex, String> {
    let pattern = std::str::from_utf8(pattern)
        .map_err(|_| "error parsing regexp: invalid UTF-8".to_owned())?;
    if pattern.len() > MAX_PATTERN {
        return Err(format!("a pattern longer than {MAX_PATTERN} bytes"));
    }
    RegexBuilder::new(&translate(pattern)?)
        .size_limit(MAX_PROGRAM)
        .build()
        .map_err(|e| format!("error parsing regexp: {e}"))
}

#[cfg(test)]
mod tests {
    use super::compile;

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let re = compile(br"^\d+\w*$").unwrap();
        assert!(re.is_match("123abc_"));
        assert!(!re.is_match("١٢٣"), "Arabic digits are not \\d in Go");
        assert!(compile(br"[\d\s]+").unwrap().is_match("1 2"));
        assert_eq!(
            compile(br"(\w+)@(\w+)")
                .unwrap()
                .replace_all("a@b", "$2@$1"),
            "b@a"
        );
        assert!(compile(b"(").is_err());
    }
}
