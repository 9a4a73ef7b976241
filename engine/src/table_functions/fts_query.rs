//! The query text of `fts_search` and `hybrid_search`: words, as a search box takes them, with the operators
//! people know from Lucene and Elasticsearch's `query_string`:
//!
//! - `rust database`: any of the words, ranked by BM25 (Lance's match query, operator OR);
//! - `"exact phrase"`, `"exact phrase"~2`: the words next to each other (or within 2 moves), which needs an index
//!   built `WITH (with_position = true)` (`memories.content`'s is);
//! - `+word`, `+"a phrase"`: must match; `-word`, `-"a phrase"`: must not;
//! - `word~`, `word~1`, `word~2`: fuzzy, within that many edits (`~` alone: Lance's automatic distance).
//!
//! A query that starts with `{` is Lance's JSON query (`{"match": {...}}`, `{"phrase": ...}`, `{"boolean": ...}`,
//! `{"boost": ...}`), for what the syntax does not say; its columns are replaced by the searched column.
//! A `+` or `-` that is not followed by a word, a quote mark inside a word and one without a closing quote are
//! ordinary characters: questions typed by people and agents keep working.

use datafusion::common::Result as DFResult;
use lance_index::scalar::inverted::query::{
    BooleanQuery, FtsQuery, MatchQuery, Occur, Operator, PhraseQuery,
};
use lance_index::scalar::FullTextSearchQuery;

use super::fts_search::check_query;
use super::plan_err;
use crate::vector::lance_err;

/// Edits a fuzzy term may be away from an indexed one (Lance builds a Levenshtein automaton per term; beyond 2 it
/// matches most of a vocabulary).
const MAX_FUZZINESS: u32 = 2;

/// The Lance query for `query` over `column`; a clear error for a malformed one.
pub(crate) fn parse(query: &str, column: &str, name: &str) -> DFResult<FullTextSearchQuery> {
    check_query(query, name)?;
    let fts = if query.trim_start().starts_with('{') {
        lance_index::scalar::inverted::parser::from_json(query)
            .map_err(|e| plan_err(format!("{name}: not a Lance JSON query: {e}")))?
    } else {
        from_syntax(query, name)?
    };
    FullTextSearchQuery::new_query(fts)
        .with_column(column.to_string())
        .map_err(lance_err)
}

#[derive(Debug, PartialEq)]
enum Clause {
    Word(String),
    Fuzzy(String, Option<u32>),
    Phrase(String, u32),
}

fn from_syntax(query: &str, name: &str) -> DFResult<FtsQuery> {
    let mut plain: Vec<String> = vec![];
    let mut clauses: Vec<(Occur, Clause)> = vec![];
    let mut rest = query;
    loop {
        rest = rest.trim_start();
        let Some(first) = rest.chars().next() else {
            break;
        };
        let (occur, body) = match first {
            '+' | '-'
                if rest[1..].starts_with(|c: char| !c.is_whitespace() && c != '+' && c != '-') =>
            {
                let occur = if first == '+' {
                    Occur::Must
                } else {
                    Occur::MustNot
                };
                (Some(occur), &rest[1..])
            }
            _ => (None, rest),
        };
        let phrase = body
            .strip_prefix('"')
            .and_then(|inner| inner.find('"').map(|end| (inner, end)));
        let (clause, after) = if let Some((inner, end)) = phrase {
            let (slop, after) = suffix_number(&inner[end + 1..], name)?;
            (
                Clause::Phrase(inner[..end].to_string(), slop.unwrap_or(0)),
                after,
            )
        } else {
            let end = body.find(char::is_whitespace).unwrap_or(body.len());
            let word = &body[..end];
            match word.rfind('~') {
                Some(at) if at > 0 && word[at + 1..].chars().all(|c| c.is_ascii_digit()) => {
                    let distance = if at + 1 == word.len() {
                        None
                    } else {
                        let d: u32 = word[at + 1..].parse().map_err(|_| {
                            plan_err(format!(
                                "{name}: fuzzy distance in {word:?} is not a number"
                            ))
                        })?;
                        if d > MAX_FUZZINESS {
                            return Err(plan_err(format!(
                                "{name}: fuzzy distance {d} in {word:?} is above {MAX_FUZZINESS}"
                            )));
                        }
                        Some(d)
                    };
                    (
                        Clause::Fuzzy(word[..at].to_string(), distance),
                        &body[end..],
                    )
                }
                _ => (Clause::Word(word.to_string()), &body[end..]),
            }
        };
        rest = after;
        match (occur, clause) {
            (None, Clause::Word(w)) => plain.push(w),
            (occur, clause) => clauses.push((occur.unwrap_or(Occur::Should), clause)),
        }
    }
    // Plain words only: Lance's match query over the text as given, the same query (and scores) as pylance's.
    if clauses.is_empty() {
        return Ok(MatchQuery::new(query.to_string()).into());
    }
    if clauses.iter().all(|(o, _)| matches!(o, Occur::MustNot)) && plain.is_empty() {
        return Err(plan_err(format!(
            "{name}: the query only excludes (-word); add a word or phrase to search for"
        )));
    }
    let mut parts: Vec<(Occur, FtsQuery)> = clauses
        .into_iter()
        .map(|(occur, clause)| {
            let q: FtsQuery = match clause {
                Clause::Word(w) => MatchQuery::new(w).with_operator(Operator::And).into(),
                Clause::Fuzzy(w, d) => MatchQuery::new(w).with_fuzziness(d).into(),
                Clause::Phrase(p, slop) => PhraseQuery::new(p).with_slop(slop).into(),
            };
            (occur, q)
        })
        .collect();
    if !plain.is_empty() {
        parts.push((Occur::Should, MatchQuery::new(plain.join(" ")).into()));
    }
    Ok(BooleanQuery::new(parts).into())
}

/// `~N` right after a phrase: its slop.
fn suffix_number<'a>(after: &'a str, name: &str) -> DFResult<(Option<u32>, &'a str)> {
    let Some(tail) = after.strip_prefix('~') else {
        return Ok((None, after));
    };
    let end = tail
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(tail.len());
    if end == 0 {
        return Err(plan_err(format!(
            "{name}: a phrase's ~ takes a number of moves, as in \"a phrase\"~2"
        )));
    }
    let slop = tail[..end].parse().map_err(|_| {
        plan_err(format!(
            "{name}: phrase slop {:?} is too large",
            &tail[..end]
        ))
    })?;
    Ok((Some(slop), &tail[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(q: &str) -> String {
        from_syntax(q, "t")
            .map(|q| q.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn plain_words_are_one_match_query() {
        assert!(
            parsed("rust  database").starts_with("Match("),
            "{}",
            parsed("rust database")
        );
        // Operators that are not operators stay words.
        assert!(parsed("well-known a - b + c").starts_with("Match("));
        assert!(parsed("it's \"quoted\"inside").contains("Boolean"));
    }

    #[test]
    fn operators_build_a_boolean_query() {
        let q = parsed("+rust -java \"memory database\"~1 databse~1 fast");
        assert!(q.starts_with("Boolean("), "{q}");
        assert!(q.contains("terms: \"rust\""), "{q}");
        assert!(q.contains("terms: \"java\""), "{q}");
        assert!(q.contains("slop: 1"), "{q}");
        assert!(q.contains("fuzziness: Some(1)"), "{q}");
        assert!(q.contains("terms: \"fast\""), "{q}");
        assert!(parsed("colour~").contains("fuzziness: None"));
    }

    #[test]
    fn malformed_queries_are_refused() {
        // An unclosed quote is text.
        assert!(
            parsed("\"open phrase").starts_with("Match("),
            "{}",
            parsed("\"open phrase")
        );
        assert!(parsed("-only -excluded").starts_with("error"));
        assert!(parsed("word~3").starts_with("error"));
        assert!(parsed("\"phrase\"~x").starts_with("error"));
        assert!(parse("{not json", "c", "t").is_err());
    }
}
