//! The one check that must run before the template engine converts a
//! template: subexpression nesting.
//!
//! The engine parses in two steps. Its parser (pest) checks the stack it
//! has left and fails cleanly ("stack limit reached") on input nested too
//! deep for it; but the engine then converts the parse into its template
//! tree with a recursion per subexpression level that uses several times
//! more stack per level than the parser did, so `{{x (a (a (a …` a few
//! hundred levels deep parses and then overflows the stack (on the 2 MiB
//! threads the driver used to compile on, at about 330 levels in a debug
//! build). Blocks and literals are converted without that recursion.
//!
//! So the template is first parsed here with a copy of the engine's own
//! grammar (`grammar.pest`), which sees the text exactly as the engine will
//! (`~`, whitespace, triple braces, raw blocks, escapes, string literals
//! containing parentheses), and refused when subexpressions nest deeper
//! than [`MAX_SUBEXPRESSION_DEPTH`]. The depth is measured iteratively over
//! the parser's flat output. Input this parse refuses is left to the
//! engine, whose identical parse reports it with the engine's message.

use pest::Parser as _;

use super::MAX_SUBEXPRESSION_DEPTH;

#[allow(missing_docs, clippy::pedantic, clippy::all)] // generated
mod grammar {
    /// The engine's grammar.
    #[derive(pest_derive::Parser)]
    #[grammar = "render/grammar.pest"]
    pub(super) struct Handlebars;
}

use grammar::{Handlebars, Rule};

/// Refuses subexpressions nested deeper than [`MAX_SUBEXPRESSION_DEPTH`],
/// with the line and column of the first one too deep.
pub(super) fn check_nesting(source: &str) -> Result<(), String> {
    let Ok(pairs) = Handlebars::parse(Rule::handlebars, source) else {
        return Ok(());
    };
    // Ends of the subexpressions enclosing the current one. The parser
    // lists pairs in order of their start; a pair is inside an earlier one
    // when it starts before that one ends.
    let mut open: Vec<usize> = Vec::new();
    for pair in pairs.flatten() {
        if pair.as_rule() != Rule::subexpression {
            continue;
        }
        let span = pair.as_span();
        while open.last().is_some_and(|&end| end <= span.start()) {
            open.pop();
        }
        open.push(span.end());
        if open.len() > MAX_SUBEXPRESSION_DEPTH {
            let (line, column) = span.start_pos().line_col();
            return Err(format!(
                "line {line}, column {column}: subexpressions are nested more than \
                 {MAX_SUBEXPRESSION_DEPTH} deep"
            ));
        }
    }
    Ok(())
}

/// The spans of the tags (comments excepted) the engine's grammar finds in
/// `source`, or `None` if it does not parse.
#[cfg(test)]
pub(super) fn tag_spans(source: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let pairs = Handlebars::parse(Rule::handlebars, source).ok()?;
    Some(
        pairs
            .flatten()
            .filter(|p| {
                matches!(
                    p.as_rule(),
                    Rule::expression
                        | Rule::html_expression
                        | Rule::helper_block_start
                        | Rule::helper_block_end
                        | Rule::invert_tag
                        | Rule::invert_chain_tag
                        | Rule::raw_block_start
                        | Rule::raw_block_end
                        | Rule::decorator_expression
                        | Rule::decorator_block_start
                        | Rule::decorator_block_end
                        | Rule::partial_expression
                        | Rule::partial_block_start
                        | Rule::partial_block_end
                )
            })
            .map(|p| p.as_span().start()..p.as_span().end())
            .collect(),
    )
}
