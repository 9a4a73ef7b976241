//! A bound on the parser's work, proportional to the statement's length.
//!
//! sqlparser backtracks: a reserved word whose special form fails to parse (`CAST(…`, `EXTRACT(…`, `[…`) is parsed
//! again as a plain name or function call, so each such construct nested in a failing one doubles the work
//! (22 nested `CAST(x *` took 20 s, found by fuzzing). Every expression the parser starts goes through the dialect's
//! `parse_prefix` hook, so counting those calls bounds the whole parse, retries included. Past the budget every call
//! fails at once, which unwinds each pending retry in one step.

use std::any::TypeId;
use std::cell::Cell;
use std::iter::Peekable;
use std::str::Chars;

use datafusion::sql::sqlparser::ast::{
    ColumnOption, Expr, GranteesType, Ident, ObjectNamePart, Statement,
};
use datafusion::sql::sqlparser::dialect::{Dialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// Expressions started per byte of SQL before the parse is refused. A statement that parses starts about one
/// expression per token and retries a few; a token is at least one byte.
pub const STARTS_PER_BYTE: u64 = 4;
/// The budget's floor, for short statements.
pub const MIN_STARTS: u64 = 4096;

/// A dialect that behaves as `inner` and counts the expressions the parser starts.
#[derive(Debug)]
pub struct Budgeted {
    inner: Box<dyn Dialect>,
    starts: Cell<u64>,
    limit: u64,
}

impl Budgeted {
    /// `inner`, with the budget for a statement of `sql_len` bytes.
    pub fn new(inner: Box<dyn Dialect>, sql_len: usize) -> Self {
        Self::with_limit(
            inner,
            (sql_len as u64)
                .saturating_mul(STARTS_PER_BYTE)
                .max(MIN_STARTS),
        )
    }

    pub fn with_limit(inner: Box<dyn Dialect>, limit: u64) -> Self {
        Self {
            inner,
            starts: Cell::new(0),
            limit,
        }
    }

    /// Whether the parse ran out of budget (whatever error the parser then reported).
    pub fn exhausted(&self) -> bool {
        self.starts.get() > self.limit
    }
}

/// Forwards the dialect's flags. The list is sqlparser 0.62's `fn …(&self) -> bool` methods; one missing here keeps
/// its default (`dialect_wrapper_agrees_with_the_dialect` parses with and without the wrapper).
macro_rules! forward {
    ($($name:ident)*) => {
        $(fn $name(&self) -> bool {
            self.inner.$name()
        })*
    };
}

impl Dialect for Budgeted {
    fn dialect(&self) -> TypeId {
        self.inner.dialect()
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let starts = self.starts.get() + 1;
        self.starts.set(starts);
        if starts > self.limit {
            return Some(Err(ParserError::ParserError(
                "statement too complex to parse".to_string(),
            )));
        }
        self.inner.parse_prefix(parser)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.inner.is_delimited_identifier_start(ch)
    }
    fn is_nested_delimited_identifier_start(&self, ch: char) -> bool {
        self.inner.is_nested_delimited_identifier_start(ch)
    }
    fn peek_nested_delimited_identifier_quotes(
        &self,
        chars: Peekable<Chars<'_>>,
    ) -> Option<(char, Option<char>)> {
        self.inner.peek_nested_delimited_identifier_quotes(chars)
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.inner.identifier_quote_style(identifier)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.inner.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.inner.is_identifier_part(ch)
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.inner.is_custom_operator_part(ch)
    }
    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        self.inner.parse_infix(parser, expr, precedence)
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.inner.get_next_precedence(parser)
    }
    fn get_next_precedence_default(&self, parser: &Parser) -> Result<u8, ParserError> {
        self.inner.get_next_precedence_default(parser)
    }
    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<Statement, ParserError>> {
        self.inner.parse_statement(parser)
    }
    fn parse_column_option(
        &self,
        parser: &mut Parser,
    ) -> Result<Option<Result<Option<ColumnOption>, ParserError>>, ParserError> {
        self.inner.parse_column_option(parser)
    }
    fn prec_value(&self, prec: Precedence) -> u8 {
        self.inner.prec_value(prec)
    }
    fn prec_unknown(&self) -> u8 {
        self.inner.prec_unknown()
    }
    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.inner.is_reserved_for_identifier(kw)
    }
    fn get_reserved_keywords_for_select_item_operator(&self) -> &[Keyword] {
        self.inner.get_reserved_keywords_for_select_item_operator()
    }
    fn get_reserved_grantees_types(&self) -> &[GranteesType] {
        self.inner.get_reserved_grantees_types()
    }
    fn is_column_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.inner.is_column_alias(kw, parser)
    }
    fn is_select_item_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.inner.is_select_item_alias(explicit, kw, parser)
    }
    fn is_table_factor(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.inner.is_table_factor(kw, parser)
    }
    fn is_table_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.inner.is_table_alias(kw, parser)
    }
    fn is_table_factor_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.inner.is_table_factor_alias(explicit, kw, parser)
    }
    fn is_identifier_generating_function_name(
        &self,
        ident: &Ident,
        name_parts: &[ObjectNamePart],
    ) -> bool {
        self.inner
            .is_identifier_generating_function_name(ident, name_parts)
    }

    forward! {
        supports_string_literal_backslash_escape ignores_wildcard_escapes supports_unicode_string_literal
        supports_filter_during_aggregation supports_window_clause_named_window_reference
        supports_within_after_array_aggregation supports_partition_by_after_order_by supports_array_join_syntax
        supports_group_by_expr supports_group_by_with_modifier supports_left_associative_joins_without_parens
        supports_outer_join_operator supports_cross_join_constraint supports_connect_by supports_execute_immediate
        supports_match_recognize supports_in_empty_list supports_start_transaction_modifier
        supports_end_transaction_modifier supports_named_fn_args_with_eq_operator
        supports_named_fn_args_with_colon_operator supports_named_fn_args_with_assignment_operator
        supports_named_fn_args_with_rarrow_operator supports_named_fn_args_with_expr_name supports_numeric_prefix
        supports_numeric_literal_underscores supports_window_function_null_treatment_arg supports_dictionary_syntax
        support_map_literal_syntax supports_lambda_functions supports_parenthesized_set_variables
        supports_comma_separated_set_assignments supports_update_order_by supports_select_wildcard_except
        convert_type_before_value supports_triple_quoted_string supports_trailing_commas supports_limit_comma
        supports_string_literal_concatenation supports_string_literal_concatenation_with_newline
        supports_projection_trailing_commas supports_from_trailing_commas supports_column_definition_trailing_commas
        supports_object_name_double_dot_notation supports_struct_literal supports_empty_projections
        supports_select_expr_star supports_from_first_select supports_from_first_insert supports_pipe_operator
        supports_user_host_grantee supports_match_against supports_select_wildcard_exclude supports_select_exclude
        supports_create_table_multi_schema_info_sources supports_select_modifiers describe_requires_table_keyword
        allow_extract_custom allow_extract_single_quotes supports_extract_comma_syntax
        supports_subquery_as_function_arg supports_create_view_comment_syntax
        supports_array_typedef_without_element_type supports_parens_around_table_factor
        supports_values_as_table_factor supports_dollar_placeholder supports_dollar_as_money_prefix
        supports_create_index_with_clause require_interval_qualifier supports_explain_with_utility_options
        supports_asc_desc_in_column_definition supports_factorial_operator supports_bitwise_shift_operators
        supports_nested_comments supports_multiline_comment_hints supports_eq_alias_assignment supports_try_convert
        supports_bang_not_operator supports_listen_notify supports_load_data supports_load_extension
        supports_top_before_distinct supports_boolean_literals supports_show_like_before_in supports_comment_on
        supports_create_table_select supports_partiql supports_constraint_keyword_without_name
        supports_key_column_option supports_table_sample_before_alias supports_insert_set
        supports_insert_table_function supports_insert_table_query supports_insert_format supports_insert_table_alias
        supports_set_stmt_without_operator supports_table_versioning supports_string_escape_constant
        supports_table_hints requires_single_line_comment_whitespace supports_array_typedef_with_brackets
        supports_geometric_types supports_order_by_all supports_set_names supports_space_separated_column_options
        supports_alter_column_type_using supports_comma_separated_drop_column_list supports_notnull_operator
        supports_data_type_signed_suffix supports_interval_options supports_create_table_like_parenthesized
        supports_semantic_view_table_factor supports_quote_delimited_string supports_comment_optimizer_hint
        supports_double_ampersand_operator supports_binary_kw_as_cast supports_select_wildcard_replace
        supports_select_wildcard_ilike supports_select_wildcard_rename supports_select_wildcard_with_alias
        supports_optimize_table supports_install supports_detach supports_prewhere supports_with_fill
        supports_limit_by supports_interpolate supports_settings supports_select_format supports_comma_separated_trim
        supports_cte_without_as supports_select_item_multi_column_alias supports_xml_expressions
        supports_create_table_using supports_long_type_as_bigint supports_map_literal_with_angle_brackets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::dialect_from_str;

    fn nested(n: usize, tail: &str) -> String {
        format!("SELECT {}1{tail}", "CAST(x * ".repeat(n))
    }

    #[test]
    fn nested_failing_forms_are_refused_in_linear_time() {
        // 2^28 retries without the budget; refused after a few thousand expression starts with it.
        for sql in [nested(28, ""), nested(28, &")".repeat(28))] {
            let err = crate::sql::parse(&sql).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::InvalidInput);
            assert!(
                err.message().contains("too complex to parse"),
                "{}",
                err.message()
            );
        }
        // Found by fuzzing sql_plan: unclosed CASTs inside function calls in an UPDATE.
        let sql = format!(
            "UPDATE items SET qty = items.qty + {}1",
            "CAST(p.price *iesitems.qty + CAST(p.pririce *iety + ".repeat(20)
        );
        assert!(crate::sql::parse(&sql).is_err());
    }

    #[test]
    fn statements_that_parse_stay_within_the_budget() {
        let casts = |n: usize| format!("SELECT {}1{}", "CAST(x * ".repeat(n), " AS INT)".repeat(n));
        crate::sql::parse(&casts(12)).unwrap();
        // Past the parser's recursion limit a statement fails, and the failure was retried 2^n times.
        let err = crate::sql::parse(&casts(40)).unwrap_err();
        assert!(
            err.message().contains("too complex to parse"),
            "{}",
            err.message()
        );
        // Special forms that the parser tries before a plain function call.
        for sql in [
            "SELECT extract(year FROM now()), position('a' IN s), substring(s FROM 2 FOR 3), trim(BOTH 'x' FROM s) FROM t",
            "SELECT 'a' IN ('a', 'b'), [1, 2][1], CASE WHEN a THEN 1 ELSE 2 END FROM t",
        ] {
            crate::sql::parse(sql).unwrap();
        }
    }

    #[test]
    fn dialect_wrapper_agrees_with_the_dialect() {
        let statements = [
            "SELECT a::int, \"b\", `c`, [1, 2], x -> 'k', y ->> 'k' FROM s.t AS u WHERE a LIKE 'x%' ORDER BY 1",
            "SELECT max(interval) FROM t GROUP BY ALL",
            "INSERT INTO t (a) VALUES (1), (2) RETURNING a",
            "SELECT * FROM t1 JOIN t2 USING (id) LIMIT 10 OFFSET 2",
            "CREATE TABLE t (a INT PRIMARY KEY, b TEXT NOT NULL DEFAULT 'x')",
            "SELECT $1, ?, @x, 1e3, X'ab', E'a\\n' FROM t",
        ];
        for name in [
            "generic",
            "postgresql",
            "mysql",
            "sqlite",
            "duckdb",
            "bigquery",
            "snowflake",
            "hive",
            "mssql",
            "clickhouse",
            "databricks",
            "redshift",
            "ansi",
        ] {
            let dialect = dialect_from_str(name).unwrap();
            let wrapped = Budgeted::new(dialect_from_str(name).unwrap(), 1 << 20);
            for sql in statements {
                let plain = Parser::parse_sql(dialect.as_ref(), sql).map(|s| format!("{s:?}"));
                let through = Parser::parse_sql(&wrapped, sql).map(|s| format!("{s:?}"));
                assert_eq!(
                    plain.map_err(|e| e.to_string()),
                    through.map_err(|e| e.to_string()),
                    "{name}: {sql}"
                );
            }
        }
    }
}
