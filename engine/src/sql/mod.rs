//! SQL text: Marrow's dialect, parsing, and the quoting of names and values in statements Marrow writes itself.

pub mod budget;
pub mod depth;
pub mod dialect;

use datafusion::config::Dialect;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr as SqlExpr, Ident, ObjectName};

use crate::config::{CATALOG, SCHEMA};
use crate::error::{Error, Result};

/// Parse a script into statements with Marrow's dialect.
pub fn parse(sql: &str) -> Result<Vec<DFStatement>> {
    parse_in(sql, Dialect::Generic)
}

/// Parse a script with the dialect a session chose (`datafusion.sql_parser.dialect`): the generic one is Marrow's
/// (generic plus time travel and PostgreSQL's JSON operator precedence); any other is sqlparser's own, as in
/// DataFusion (so `SET datafusion.sql_parser.dialect = databricks` gives lambdas, `mysql` its intervals …).
pub fn parse_in(sql: &str, dialect: Dialect) -> Result<Vec<DFStatement>> {
    let chosen: Box<dyn datafusion::sql::sqlparser::dialect::Dialect> = match dialect {
        Dialect::Generic => Box::new(dialect::MarrowDialect),
        other => datafusion::sql::sqlparser::dialect::dialect_from_str(other.as_ref())
            .ok_or_else(|| Error::invalid(format!("unsupported SQL dialect '{other}'")))?,
    };
    depth::check_nesting(chosen.as_ref(), sql, depth::MAX_NESTING)?;
    let budgeted = budget::Budgeted::new(chosen, sql.len());
    let parsed = DFParserBuilder::new(sql)
        .with_dialect(&budgeted)
        .build()?
        .parse_statements();
    if budgeted.exhausted() {
        return Err(Error::invalid(format!(
            "statement too complex to parse: the parser retried alternatives past its budget for {} bytes of SQL; \
             this happens when a statement that does not parse nests many CAST(…), EXTRACT(…), CASE or similar \
             forms, or nests past the parser's recursion limit: check it for unclosed parentheses and missing AS \
             or END",
            sql.len()
        )));
    }
    parsed?.into_iter().map(number_placeholders).collect()
}

/// `?` placeholders (ADBC's and JDBC's style) numbered `$1, $2, …` in the order they appear, as DataFusion binds
/// them. A statement mixes the two styles only by mistake: refused.
fn number_placeholders(mut statement: DFStatement) -> Result<DFStatement> {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Value};
    let DFStatement::Statement(s) = &mut statement else {
        return Ok(statement);
    };
    let (mut qmarks, mut numbered) = (0usize, false);
    let _ = visit_expressions_mut(s.as_mut(), |e| {
        if let SqlExpr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    qmarks += 1;
                    *p = format!("${qmarks}");
                } else {
                    numbered = true;
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if qmarks > 0 && numbered {
        return Err(Error::invalid(
            "a statement uses either ? or $1, $2, … placeholders, not both",
        ));
    }
    Ok(statement)
}

/// Parse exactly one statement.
pub fn parse_one(sql: &str) -> Result<DFStatement> {
    parse_one_in(sql, Dialect::Generic)
}

/// Parse exactly one statement in the given dialect (see [`parse_in`]).
pub fn parse_one_in(sql: &str, dialect: Dialect) -> Result<DFStatement> {
    let mut statements = parse_in(sql, dialect)?;
    match statements.len() {
        0 => Err(Error::invalid("empty statement")),
        1 => Ok(statements.remove(0)),
        n => Err(Error::invalid(format!(
            "expected one statement, got {n}; send them one at a time"
        ))),
    }
}

/// The table a statement names, normalized as DataFusion does (unquoted identifiers are lower-cased).
pub(crate) fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            let ident = p
                .as_ident()
                .ok_or_else(|| Error::invalid(format!("unsupported table name {name}")))?;
            Ok(match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            })
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == SCHEMA => Ok(t.clone()),
        [c, s, t] if c == CATALOG && s == SCHEMA => Ok(t.clone()),
        _ => Err(Error::not_found(format!(
            "table '{name}' not found: Marrow's tables live in {CATALOG}.{SCHEMA}"
        ))),
    }
}

/// A double-quoted SQL identifier.
pub(crate) fn quote(s: &str) -> String {
    Ident::with_quote('"', s).to_string()
}

/// A single-quoted SQL string literal.
pub(crate) fn literal(s: &str) -> String {
    datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s.to_string()).to_string()
}

/// Qualify bare column names in an expression with `alias` (used where two relations share column names).
pub(crate) fn qualify_columns(expr: &mut SqlExpr, alias: &str) {
    let _ = visit_expressions_mut(expr, |e| {
        if let SqlExpr::Identifier(ident) = e {
            *e = SqlExpr::CompoundIdentifier(vec![
                datafusion::sql::sqlparser::ast::Ident::with_quote('"', alias),
                ident.clone(),
            ]);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_in_order() {
        let one = |sql: &str| parse_one(sql).unwrap().to_string();
        assert_eq!(one("SELECT ? + ?"), "SELECT $1 + $2");
        assert_eq!(
            one("UPDATE t SET x = ? WHERE id = ? AND y IN (?, ?)"),
            "UPDATE t SET x = $1 WHERE id = $2 AND y IN ($3, $4)"
        );
        assert_eq!(
            one("INSERT INTO t VALUES (?, ?)"),
            "INSERT INTO t VALUES ($1, $2)"
        );
        assert_eq!(one("SELECT $2, $1"), "SELECT $2, $1");
        let err = parse_one("SELECT ?, $1").unwrap_err();
        assert!(err.message().contains("not both"), "{}", err.message());
    }
}
