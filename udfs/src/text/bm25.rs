//! `bm25(column, query)`: the BM25 score of a text column against a full-text query, as a sort key. A score needs
//! the whole table (document frequencies, average length), so the engine plans `ORDER BY bm25(col, query) DESC
//! LIMIT k` over one table as a full-text search that ranks the table's rows; evaluated anywhere else, row by row,
//! it is an error that says how to use it.

use arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion_macros::user_doc;

#[user_doc(
    doc_section(label = "Full-text Functions"),
    description = "The BM25 score of a text column against a full-text query (Lance's BM25: k1 1.2, b 0.75; the \
query syntax of `fts_search`), for ranking: `ORDER BY bm25(col, query) DESC LIMIT k` over one table runs as a \
full-text search of that table (through its INVERTED index on the column if it has one, otherwise exhaustive BM25 \
over every row; EXPLAIN shows `FullTextSearchExec` and which), with the WHERE clause on the table's columns applied \
before ranking, so k rows come back whenever k pass it. The score can also be selected (`bm25(col, query) AS s`) in \
such a query. Anywhere else (without LIMIT, ascending, over a join) it is an error: a score needs the whole table. \
The query may be a `$n` parameter.",
    syntax_example = "bm25(column, query)",
    sql_example = r#"```sql
> SELECT id, bm25(content, 'lyon pastry') AS score FROM notes WHERE kind = 'fact'
  ORDER BY score DESC LIMIT 5;
```"#,
    argument(name = "column", description = "A text column of the table."),
    argument(
        name = "query",
        description = "The full-text query: words, \"phrases\", +must, -must_not, fuzzy~ (as fts_search)."
    ),
    related_udf(name = "embed")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bm25 {
    signature: Signature,
}

impl Default for Bm25 {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The `bm25` function.
pub fn bm25() -> ScalarUDF {
    ScalarUDF::new_from_impl(Bm25::default())
}

impl ScalarUDFImpl for Bm25 {
    fn name(&self) -> &str {
        "bm25"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!(
            "bm25(column, query) ranks the rows of one table and has no value row by row: use it as \
             ORDER BY bm25(column, 'query') DESC LIMIT k over a single table (a WHERE clause on its columns filters \
             first), or use fts_search(table, column, query, k)"
        )
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}
