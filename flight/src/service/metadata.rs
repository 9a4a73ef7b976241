//! Catalog listings (GetCatalogs, GetDbSchemas, GetTables, GetTableTypes): what a session's DataFusion context
//! sees, built with arrow-flight's metadata builders. The name patterns of GetDbSchemas and GetTables (SQL `LIKE`)
//! are applied here by [`LikePattern`], whose matching takes at most (pattern length × name length) steps, before
//! any table is opened; the builders get only the catalog and table type filters.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::sql::metadata::{GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables,
};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, INFORMATION_SCHEMA_TABLES};
use datafusion::datasource::TableType;
use datafusion::sql::TableReference;
use marrow_engine::Session;
use tonic::{Request, Response};

use super::tickets::Pending;
use super::{call_context, MarrowFlightService};
use crate::error::{Error, Result};

const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

/// The longest name pattern accepted, in characters (longer ones are INVALID_ARGUMENT).
pub(super) const MAX_PATTERN_CHARS: usize = 1024;

/// A Flight SQL name filter pattern, SQL `LIKE` as arrow's `like` kernel reads it: `%` matches any run of characters
/// (including none), `_` exactly one character, and `\` makes the character after it literal (a trailing `\` is a
/// backslash). Case-sensitive.
///
/// Matching is one loop with a single resume point, the last `%` passed: on a mismatch the name is retried from
/// there one character further on. Every retry moves that point forward, so a match takes at most
/// (pattern length + 1) × (name length + 1) steps whatever the pattern. Earlier `%`s are never retried: whatever
/// more they could absorb, the last one can absorb as well. A recursive matcher that tries every split for every
/// `%` takes time exponential in the number of `%`s: Marrow's first one spent 0.8 s on `%a%a%a%a%a%a%a%a%b` against
/// a name of 30 `a`s and 2.7 s against 34 (this one: 15 µs). Arrow's `like` kernel is linear but compiles each
/// pattern to a regex, which takes a third of a second for a 20 KB pattern and then fails as an internal error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LikePattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `%`; runs of them are one.
    Any,
    /// `_`.
    One,
    Char(char),
}

impl LikePattern {
    /// Parse a request's pattern; INVALID_ARGUMENT when it is longer than [`MAX_PATTERN_CHARS`].
    pub(super) fn parse(pattern: &str) -> Result<Self> {
        // Bytes bound characters from above: a huge pattern is refused without being walked.
        if pattern.len() > MAX_PATTERN_CHARS && pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(Error::invalid(format!(
                "name filter pattern too long: {} bytes; at most {MAX_PATTERN_CHARS} characters are accepted",
                pattern.len()
            )));
        }
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '%' if tokens.last() == Some(&Token::Any) => continue,
                '%' => Token::Any,
                '_' => Token::One,
                '\\' => Token::Char(chars.next().unwrap_or('\\')),
                c => Token::Char(c),
            };
            tokens.push(token);
        }
        Ok(Self { tokens })
    }

    /// The optional pattern of a request.
    fn parse_opt(pattern: Option<&str>) -> Result<Option<Self>> {
        pattern.map(Self::parse).transpose()
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        let pattern = &self.tokens;
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        // After the last `%` passed: where the pattern goes on, and the name position it was last tried at.
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some(Token::Any) => {
                    p += 1;
                    resume = Some((p, n));
                }
                Some(Token::One) => (p, n) = (p + 1, n + 1),
                Some(Token::Char(c)) if *c == name[n] => (p, n) = (p + 1, n + 1),
                _ => match resume {
                    // The last `%` swallows one more character and the rest of the pattern is tried again.
                    Some((after, at)) => {
                        resume = Some((after, at + 1));
                        (p, n) = (after, at + 1);
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|t| *t == Token::Any)
    }
}

/// The name patterns of a listing request, checked when its FlightInfo is asked for.
fn check_patterns(pending: &Pending) -> Result<()> {
    match pending {
        Pending::Schemas(cmd) => {
            LikePattern::parse_opt(cmd.db_schema_filter_pattern.as_deref())?;
        }
        Pending::Tables(cmd) => {
            LikePattern::parse_opt(cmd.db_schema_filter_pattern.as_deref())?;
            LikePattern::parse_opt(cmd.table_name_filter_pattern.as_deref())?;
        }
        _ => {}
    }
    Ok(())
}

impl MarrowFlightService {
    /// FlightInfo for a listing: the ticket builds it at DoGet, in the caller's session.
    pub(super) fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        pending: Pending,
    ) -> Result<Response<FlightInfo>> {
        check_patterns(&pending)?;
        let session = call_context(&request)?.session();
        self.flight_info(&session, &schema, pending, -1, request.into_inner())
    }
}

fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// Every (catalog, schema) pair a session sees, including each catalog's `information_schema`.
fn list_schemas(engine: &Session) -> Vec<(String, String)> {
    let ctx = engine.context();
    let mut out = vec![];
    for catalog in ctx.catalog_names() {
        let Some(provider) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema in provider.schema_names() {
            out.push((catalog.clone(), schema));
        }
        if !out
            .iter()
            .any(|(c, s)| *c == catalog && s == INFORMATION_SCHEMA)
        {
            out.push((catalog.clone(), INFORMATION_SCHEMA.to_string()));
        }
    }
    out
}

fn table_names(engine: &Session, catalog: &str, schema: &str) -> Vec<String> {
    if schema == INFORMATION_SCHEMA {
        return INFORMATION_SCHEMA_TABLES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    let ctx = engine.context();
    let mut names: Vec<String> = ctx
        .catalog(catalog)
        .and_then(|c| c.schema(schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !marrow_engine::is_internal_relation(t))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The items whose name matches a Flight SQL filter pattern: applied before tables are opened, so a narrow pattern
/// opens only the tables it names.
fn matching<T>(items: Vec<T>, pattern: Option<&LikePattern>, name: impl Fn(&T) -> &str) -> Vec<T> {
    match pattern {
        None => items,
        Some(p) => items.into_iter().filter(|i| p.matches(name(i))).collect(),
    }
}

pub(super) async fn tables(engine: &Session, cmd: CommandGetTables) -> Result<RecordBatch> {
    let schema_pattern = LikePattern::parse_opt(cmd.db_schema_filter_pattern.as_deref())?;
    let table_pattern = LikePattern::parse_opt(cmd.table_name_filter_pattern.as_deref())?;
    let catalog_filter = cmd.catalog.clone();
    let include_schema = cmd.include_schema;
    // The patterns are applied here; arrow-flight's builder would apply them again with the LIKE kernel.
    let mut builder = GetTablesBuilder::new(
        cmd.catalog,
        None::<String>,
        None::<String>,
        cmd.table_types,
        include_schema,
    );
    let ctx = engine.context();
    let empty: SchemaRef = Arc::new(Schema::empty());
    let schemas = list_schemas(engine)
        .into_iter()
        .filter(|(catalog, _)| catalog_filter.as_ref().is_none_or(|c| c == catalog))
        .collect();
    for (catalog, schema) in matching(schemas, schema_pattern.as_ref(), |(_, s)| s) {
        let names = table_names(engine, &catalog, &schema);
        for table in matching(names, table_pattern.as_ref(), |t| t) {
            let reference = TableReference::full(catalog.as_str(), schema.as_str(), table.as_str());
            let (table_type, table_schema) = match ctx.table_provider(reference).await {
                Ok(p) if include_schema => (p.table_type(), p.schema()),
                Ok(p) => (p.table_type(), empty.clone()),
                // A view that no longer plans is listed without columns, so a client can find and drop it.
                Err(e) => match table_kind(engine, &catalog, &schema, &table).await {
                    Some(kind) => {
                        tracing::warn!(
                            "GetTables lists {catalog}.{schema}.{table} without columns: {e}"
                        );
                        (kind, empty.clone())
                    }
                    // Dropped meanwhile.
                    None => continue,
                },
            };
            builder
                .append(
                    &catalog,
                    &schema,
                    &table,
                    table_type_name(table_type),
                    &table_schema,
                )
                .map_err(|e| Error::internal("listing tables", e))?;
        }
    }
    builder
        .build()
        .map_err(|e| Error::internal("listing tables", e))
}

/// A table's type as its schema provider reports it without planning it.
async fn table_kind(
    engine: &Session,
    catalog: &str,
    schema: &str,
    table: &str,
) -> Option<TableType> {
    let provider = engine.context().catalog(catalog)?.schema(schema)?;
    provider.table_type(table).await.ok().flatten()
}

pub(super) fn schemas(engine: &Session, cmd: CommandGetDbSchemas) -> Result<RecordBatch> {
    let pattern = LikePattern::parse_opt(cmd.db_schema_filter_pattern.as_deref())?;
    let mut builder = GetDbSchemasBuilder::new(cmd.catalog, None::<String>);
    for (catalog, schema) in matching(list_schemas(engine), pattern.as_ref(), |(_, s)| s) {
        builder.append(catalog, schema);
    }
    builder
        .build()
        .map_err(|e| Error::internal("listing schemas", e))
}

pub(super) fn catalogs(engine: &Session, cmd: CommandGetCatalogs) -> Result<RecordBatch> {
    let mut builder = cmd.into_builder();
    for catalog in engine.context().catalog_names() {
        builder.append(catalog);
    }
    builder
        .build()
        .map_err(|e| Error::internal("listing catalogs", e))
}

pub(super) fn table_types(cmd: CommandGetTableTypes) -> Result<RecordBatch> {
    let mut builder = cmd.into_builder();
    for t in TABLE_TYPES {
        builder.append(t);
    }
    builder
        .build()
        .map_err(|e| Error::internal("listing table types", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::compute::kernels::comparison::like as like_kernel;

    fn like(pattern: &str, name: &str) -> bool {
        LikePattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn like_patterns() {
        assert!(like("%", ""));
        assert!(like("", ""));
        assert!(!like("", "a"));
        assert!(!like("_", ""));
        assert!(like("mem%", "memories"));
        assert!(like("m_m%", "memories"));
        assert!(!like("m_m", "memories"));
        assert!(like("memories", "memories"));
        assert!(!like("Memories", "memories"));
        assert!(like("a\\_b", "a_b"));
        assert!(!like("a\\_b", "axb"));
        assert!(like("a\\%", "a%"));
        assert!(!like("a\\%", "ab"));
        assert!(like("a\\\\b", "a\\b"));
        assert!(like("a\\", "a\\"));
        assert!(like("%ies", "memories"));
        assert!(like("%o%i%", "memories"));
        assert!(!like("%o%m%", "memories"));
        // `_` is one character, not one byte.
        assert!(like("_", "é"));
        assert!(like("caf_", "café"));
        assert!(!like("caf__", "café"));
    }

    /// Agrees with arrow's `like` kernel (the filter arrow-flight's builders apply) on every pattern and name over a
    /// small alphabet, up to four characters each.
    #[test]
    fn agrees_with_the_like_kernel() {
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let names = all(&['a', 'b', '_', '%', '\\'], 4);
        let haystack = StringArray::from_iter_values(&names);
        let mut checked = 0;
        for pattern in all(&['a', 'b', '%', '_', '\\'], 4) {
            let expected = like_kernel(&haystack, &StringArray::new_scalar(&pattern)).unwrap();
            let ours = LikePattern::parse(&pattern).unwrap();
            for (name, want) in names.iter().zip(expected.iter()) {
                assert_eq!(
                    ours.matches(name),
                    want.unwrap(),
                    "{pattern:?} LIKE {name:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 200_000);
    }

    /// Patterns that make a backtracking matcher try every way to split the name among the `%`s: here more than 10^35
    /// ways, so only a matcher that is polynomial in the sizes can finish this test.
    #[test]
    fn pathological_patterns_are_polynomial() {
        let long = "a".repeat(5000);
        let star_a = format!("{}b", "%a".repeat(12));
        assert!(!like(&star_a, &long));
        assert!(like(&star_a, &format!("{long}b")));
        let star_one = format!("{}b", "%_".repeat(12));
        assert!(!like(&star_one, &long));
        assert!(like(&star_one, &format!("{long}b")));
        // The longest pattern accepted against a long name, matching and not.
        let max = format!("{}b", "%a".repeat((MAX_PATTERN_CHARS - 1) / 2));
        assert!(!like(&max, &long));
        assert!(like(&max, &format!("{long}b")));
        // The same through `matching`, over many long names.
        let names: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "{}{}",
                    "a".repeat(2000 + i),
                    if i % 2 == 0 { "b" } else { "c" }
                )
            })
            .collect();
        let pattern = LikePattern::parse(&star_a).unwrap();
        let kept = matching(names, Some(&pattern), |s| s);
        assert_eq!(kept.len(), 25);
        assert!(kept.iter().all(|n| n.ends_with('b')));
    }

    #[test]
    fn overlong_patterns_are_invalid_arguments() {
        let ok = "é".repeat(MAX_PATTERN_CHARS);
        assert!(LikePattern::parse(&ok).is_ok());
        let err = LikePattern::parse(&"%".repeat(MAX_PATTERN_CHARS + 1)).unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("too long"),
            "{}",
            status.message()
        );
        assert!(LikePattern::parse(&"_".repeat(10_000_000)).is_err());
    }
}
