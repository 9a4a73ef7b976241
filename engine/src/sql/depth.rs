//! A bound on how deeply one statement nests, checked on its tokens before it is parsed.
//!
//! The parser builds operator chains (`1+1+…`, `a OR b OR …`, `x::t::t…`) and set-operation or join chains
//! (`… UNION ALL …`) in a loop, so its recursion limit does not see them; planning, optimizing, evaluating and even
//! dropping the resulting trees then recurse once per link. A chain of a few thousand links exhausts a thread's stack
//! and aborts the process, so the length is bounded here, in linear time and without recursion, before any tree
//! exists. The estimate is an upper bound on the depth of the trees the statement produces: every infix operator or
//! set operator counts one level, a comma starts a new list element (an `IN (…)` list or a VALUES row of any size
//! is flat), and a parenthesized group adds its own deepest chain to the chain it sits in.

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

/// The deepest chain a statement may hold. Generous for generated SQL (a 2,000-term OR of equalities), and what
/// the server's thread stacks are sized for (`STACK_SIZE`, with a wide margin for debug builds).
pub const MAX_NESTING: usize = 4096;

/// Stack size for every thread that parses, plans or executes statements (see the binary's runtime).
pub const STACK_SIZE: usize = 64 << 20;

/// The most periods one dotted chain (`catalog.schema.table.column.field…`) may hold. The parser retries each
/// link of a chain that starts at a placeholder and holds an empty part (`$a.b.….b..c`) both ways, so its time
/// doubles per link (22 links: 8 s, found by fuzzing); real names use a handful.
pub const MAX_CHAIN_PERIODS: usize = 12;

#[derive(Default, Clone, Copy)]
struct Level {
    /// Operators since the last comma at this level.
    ops: usize,
    /// Set operations and joins at this level (a comma does not end those chains).
    sets: usize,
    /// The deepest closed parenthesized group since the last comma.
    carry: usize,
    /// The deepest this level (with its groups) has been.
    peak: usize,
}

impl Level {
    fn depth(&self) -> usize {
        self.ops + self.sets + self.carry
    }
}

fn is_chain_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::AND
            | Keyword::OR
            | Keyword::XOR
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::REGEXP
            | Keyword::RLIKE
            | Keyword::IS
            | Keyword::IN
            | Keyword::BETWEEN
            | Keyword::COLLATE
            | Keyword::AT
            | Keyword::DIV
            | Keyword::MOD
    )
}

fn is_set_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::MINUS | Keyword::JOIN
    )
}

/// Tokens that never deepen a tree: literals, names, list and group punctuation.
fn is_flat(t: &Token) -> bool {
    matches!(
        t,
        Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::SemiColon
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_)
            | Token::EOF
    ) || matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// The nesting estimate of `sql`'s deepest statement; an error once it passes `limit`. A tokenizer error is left for
/// the parser to report with its position.
pub fn check_nesting(dialect: &dyn Dialect, sql: &str, limit: usize) -> Result<usize> {
    let Ok(tokens) = Tokenizer::new(dialect, sql).tokenize() else {
        return Ok(0);
    };
    let mut stack = vec![Level::default()];
    // Depth of the levels below the innermost one, kept incrementally so each token costs O(1).
    let mut below = 0usize;
    let mut deepest = 0usize;
    let mut periods = 0usize;
    // Which of the open levels a `[` opened: a `[` never closed makes sqlparser retry each dotted name inside it
    // both ways, its time growing fourfold per such bracket (`x.a[y.b.a[y.b…`: 12 took 30 s).
    let mut brackets: Vec<bool> = vec![];
    for token in &tokens {
        match token {
            Token::Period => {
                periods += 1;
                if periods > MAX_CHAIN_PERIODS {
                    return Err(Error::invalid(format!(
                        "a dotted name has more than {} parts (a.b.c…); names have at most \
                         catalog.schema.table.column and a few nested fields",
                        MAX_CHAIN_PERIODS + 1
                    )));
                }
            }
            Token::Word(_) | Token::Placeholder(_) | Token::Whitespace(_) => {}
            _ => periods = 0,
        }
        let levels = stack.len();
        let top = stack
            .last_mut()
            .expect("the statement level is never popped");
        match token {
            Token::LParen | Token::LBracket => {
                below += top.depth();
                stack.push(Level::default());
                brackets.push(matches!(token, Token::LBracket));
                continue;
            }
            Token::RParen | Token::RBracket if levels > 1 => {
                brackets.pop();
                let inner = stack.pop().expect("more than one level");
                let top = stack
                    .last_mut()
                    .expect("the statement level is never popped");
                below -= top.depth();
                top.carry = top.carry.max(inner.peak.max(inner.depth()) + 1);
            }
            Token::Comma => {
                top.ops = 0;
                top.carry = 0;
            }
            Token::SemiColon if levels == 1 => {
                *top = Level::default();
            }
            Token::Word(w) if is_set_keyword(w.keyword) => top.sets += 1,
            Token::Word(w) if is_chain_keyword(w.keyword) => top.ops += 1,
            t if !is_flat(t) => top.ops += 1,
            _ => {}
        }
        let top = stack
            .last_mut()
            .expect("the statement level is never popped");
        top.peak = top.peak.max(top.depth());
        let depth = below + top.depth();
        deepest = deepest.max(depth);
        if depth > limit {
            return Err(Error::invalid(format!(
                "statement nests too deeply: more than {limit} operators, set operations or joins chained in one \
                 expression or query; split it into several statements, or use IN (…), a VALUES list or a table \
                 for long lists of alternatives"
            )));
        }
    }
    let unclosed = brackets.iter().filter(|b| **b).count();
    if unclosed > 0 {
        return Err(Error::invalid(format!(
            "{unclosed} '[' never closed: every '[' (an array or a subscript) needs its ']'"
        )));
    }
    Ok(deepest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::dialect::MarrowDialect;

    fn depth(sql: &str) -> usize {
        check_nesting(&MarrowDialect, sql, usize::MAX).unwrap()
    }

    fn chain(head: &str, link: &str, n: usize) -> String {
        let mut s = head.to_string();
        for _ in 0..n {
            s.push_str(link);
        }
        s
    }

    #[test]
    fn chains_count_their_links() {
        assert_eq!(depth(&chain("SELECT 1", "+1", 100)), 100);
        assert_eq!(depth(&chain("SELECT 'a'", "||'a'", 100)), 100);
        assert_eq!(depth(&chain("SELECT true", " AND true", 100)), 100);
        assert_eq!(depth(&chain("SELECT 1", " UNION ALL SELECT 1", 100)), 100);
        assert_eq!(depth(&chain("SELECT 1::int", "::int", 50)), 51);
    }

    #[test]
    fn long_dotted_chains_are_refused_before_parsing() {
        let chain = |n: usize| format!("SELECT $a.{}..c", vec!["b"; n].join("."));
        assert!(check_nesting(&MarrowDialect, &chain(8), usize::MAX).is_ok());
        let err = check_nesting(&MarrowDialect, &chain(40), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("dotted name"), "{err}");
        // Periods apart from a chain (qualified columns in a list) do not add up.
        let columns = (0..100).map(|i| format!("t.c{i}")).collect::<Vec<_>>();
        let sql = format!("SELECT {} FROM s.t", columns.join(", "));
        assert!(check_nesting(&MarrowDialect, &sql, usize::MAX).is_ok());
    }

    #[test]
    fn unclosed_brackets_are_refused_before_parsing() {
        // Found by fuzzing sql_plan: each unclosed '[' around dotted names quadrupled the parse (12 took 30 s).
        let open = |n: usize| format!("SELECT x{}", ".a[y.b".repeat(n));
        let err = check_nesting(&MarrowDialect, &open(12), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("12 '[' never closed"), "{err}");
        assert!(check_nesting(&MarrowDialect, &open(1), usize::MAX).is_err());
        // Closed brackets, arrays, subscripts and brackets inside strings or quoted names are fine.
        let closed = format!("{}{}", open(12), "]".repeat(12));
        assert!(check_nesting(&MarrowDialect, &closed, usize::MAX).is_ok());
        for sql in [
            "SELECT [1.0, 2.0][1], ARRAY[[1, 2], [3, 4]], v[2:3] FROM t",
            "SELECT '[', \"a[b\" FROM t WHERE s LIKE '%[%'",
        ] {
            assert!(
                check_nesting(&MarrowDialect, sql, usize::MAX).is_ok(),
                "{sql}"
            );
        }
    }

    #[test]
    fn lists_are_flat() {
        let list = (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>();
        let sql = format!("SELECT * FROM t WHERE id IN ({})", list.join(", "));
        assert_eq!(depth(&sql), 3); // `*` and IN, then the flat list
        let rows = (0..10_000)
            .map(|i| format!("({i}, 'a' || 'b', -1)"))
            .collect::<Vec<_>>();
        let sql = format!("INSERT INTO t VALUES {}", rows.join(", "));
        assert!(depth(&sql) <= 3, "{}", depth(&sql));
    }

    #[test]
    fn groups_add_their_depth_to_the_chain_they_sit_in() {
        // (1+1+…) + 1 + … is as deep as both chains together.
        let inner = chain("1", "+1", 100);
        let sql = format!("SELECT ({inner})") + &chain("", "+1", 100);
        assert!(depth(&sql) >= 200, "{}", depth(&sql));
        // Arguments of a call are separate elements.
        let sql = format!("SELECT f({inner}, {inner})");
        assert!((100..=102).contains(&depth(&sql)), "{}", depth(&sql));
    }

    #[test]
    fn statements_of_a_script_are_counted_apart() {
        let one = chain("SELECT 1", "+1", 60);
        assert_eq!(depth(&format!("{one}; {one}; {one}")), 60);
    }

    #[test]
    fn past_the_limit_is_an_invalid_input_error() {
        let err = check_nesting(&MarrowDialect, &chain("SELECT 1", "+1", 5000), 4096).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::InvalidInput);
        assert!(
            err.message().contains("nests too deeply"),
            "{}",
            err.message()
        );
        // A huge statement is rejected without building it: this chain would need gigabytes of stack to drop.
        let huge = chain("SELECT 1", "+1", 2_000_000);
        assert!(check_nesting(&MarrowDialect, &huge, MAX_NESTING).is_err());
    }
}
