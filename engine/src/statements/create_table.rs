//! Table DDL that must create Lance datasets: `CREATE TABLE` (with constraints and defaults) and
//! `CREATE TABLE … AS SELECT`. DataFusion plans the column list or query; Marrow writes the dataset.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::catalog::SchemaProvider;
use datafusion::common::{Constraint, ParamValues};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::execute_stream;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, ColumnOption, CreateTable, CreateTableOptions, DataType as SqlType,
    ExactNumberInfo, Expr as SqlExpr, SqlOption, Statement, Value as SqlValue,
};

use crate::catalog::write::{self, coerce_batches};
use crate::catalog::{
    storage_schema, validate_table_name, META_ALLOW_NON_FINITE, META_DEFAULTS, META_PRIMARY_KEY,
};
use crate::error::{Error, ErrorKind, Result};
use crate::extension::{is_sql, misrouted, sql_statement, StatementHandler};
use crate::session::{QueryOutput, Session};

/// `VECTOR(n)` is an alias for `FLOAT[n]`, a fixed-size list of n float32 values.
fn rewrite_vector_types(ct: &mut CreateTable) -> Result<()> {
    for col in &mut ct.columns {
        if let SqlType::Custom(name, args) = &col.data_type {
            if name.to_string().eq_ignore_ascii_case("vector") {
                let dim: u64 = match args.as_slice() {
                    [n] => n.parse().map_err(|_| {
                        Error::invalid(format!("VECTOR({n}): dimension must be a number"))
                    })?,
                    _ => {
                        return Err(Error::invalid(
                            "VECTOR needs one dimension, as in VECTOR(384)",
                        ))
                    }
                };
                if dim == 0 || dim > 65536 {
                    return Err(Error::invalid(format!(
                        "VECTOR({dim}): dimension must be between 1 and 65536"
                    )));
                }
                col.data_type = SqlType::Array(ArrayElemTypeDef::SquareBracket(
                    Box::new(SqlType::Float(ExactNumberInfo::None)),
                    Some(dim),
                ));
            }
        }
    }
    Ok(())
}

/// Marrow's table options, `CREATE TABLE … WITH (name = value, …)`, as the schema metadata that keeps them. Taken out
/// of the statement: DataFusion plans only the columns.
fn take_table_options(ct: &mut CreateTable) -> Result<Vec<(String, String)>> {
    let options = match std::mem::take(&mut ct.table_options) {
        CreateTableOptions::None => return Ok(vec![]),
        CreateTableOptions::With(options) => options,
        other => {
            return Err(Error::unsupported(format!(
                "table options written as {other} are not supported; write WITH (allow_non_finite = true)"
            )))
        }
    };
    let mut metadata = vec![];
    for option in options {
        let SqlOption::KeyValue { key, value } = &option else {
            return Err(Error::invalid(format!(
                "table option {option} is not a name = value pair"
            )));
        };
        match key.value.to_lowercase().as_str() {
            "allow_non_finite" => {
                let on = match value {
                    SqlExpr::Value(v) => match &v.value {
                        SqlValue::Boolean(b) => Some(*b),
                        SqlValue::SingleQuotedString(s) => match s.to_lowercase().as_str() {
                            "true" => Some(true),
                            "false" => Some(false),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "table option allow_non_finite must be true or false, got {value}"
                    ))
                })?;
                metadata.push((META_ALLOW_NON_FINITE.to_string(), on.to_string()));
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown table option '{other}': CREATE TABLE takes allow_non_finite (vector columns may hold \
                     NaN and infinite elements)"
                )))
            }
        }
    }
    Ok(metadata)
}

pub(crate) async fn create_table(
    session: &Session,
    mut ct: CreateTable,
    params: Option<ParamValues>,
) -> Result<QueryOutput> {
    let name = crate::sql::table_name(&ct.name)?;
    validate_table_name(&name)?;
    if ct.external || ct.temporary {
        return Err(Error::unsupported(
            "CREATE TEMPORARY/EXTERNAL TABLE through CREATE TABLE is not supported",
        ));
    }
    rewrite_vector_types(&mut ct)?;
    let options = take_table_options(&mut ct)?;
    // Defaults are stored as SQL text so that they are re-planned (now(), uuid()) on every insert.
    let mut defaults = BTreeMap::new();
    for col in &ct.columns {
        for opt in &col.options {
            if let ColumnOption::Default(expr) = &opt.option {
                defaults.insert(col.name.value.to_lowercase(), expr.to_string());
            }
        }
    }
    let if_not_exists = ct.if_not_exists;
    let or_replace = ct.or_replace;
    if if_not_exists && or_replace {
        return Err(Error::invalid(
            "CREATE OR REPLACE TABLE cannot also say IF NOT EXISTS: choose one",
        ));
    }
    let db = session.database();
    if db.schema_provider().table_exist(&name) {
        if if_not_exists {
            return Ok(QueryOutput::Done);
        }
        if !or_replace {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("table '{name}' already exists"),
            ));
        }
    }
    // Plan under a scratch name so that DataFusion's own "table exists" check does not fire for OR REPLACE.
    let mut plan_ct = ct.clone();
    plan_ct.if_not_exists = false;
    plan_ct.or_replace = false;
    let plan = session
        .plan(
            DFStatement::Statement(Box::new(Statement::CreateTable(plan_ct))),
            params,
        )
        .await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmt)) = plan else {
        return Err(Error::unsupported(
            "this form of CREATE TABLE is not supported",
        ));
    };
    let input_schema = Arc::new(cmt.input.schema().as_arrow().clone());
    let mut pk: Vec<String> = vec![];
    for c in cmt.constraints.iter() {
        match c {
            Constraint::PrimaryKey(idx) => {
                pk = idx
                    .iter()
                    .map(|i| input_schema.field(*i).name().clone())
                    .collect();
            }
            Constraint::Unique(_) => {
                return Err(Error::unsupported(
                    "UNIQUE constraints other than the PRIMARY KEY are not supported",
                ))
            }
        }
    }
    let mut fields: Vec<_> = storage_schema(&input_schema)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for f in &mut fields {
        if pk.contains(f.name()) {
            *f = f.clone().with_nullable(false);
        }
    }
    let mut metadata = std::collections::HashMap::new();
    if !pk.is_empty() {
        metadata.insert(META_PRIMARY_KEY.to_string(), pk.join(","));
    }
    if !defaults.is_empty() {
        metadata.insert(
            META_DEFAULTS.to_string(),
            serde_json::to_string(&defaults).expect("defaults serialize"),
        );
    }
    metadata.extend(options);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let state = session.state();
    let input = if ct.query.is_some() {
        let physical = state.create_physical_plan(&cmt.input).await?;
        execute_stream(physical, state.task_ctx())?
    } else {
        write::batch_stream(input_schema.clone(), vec![])
    };
    // Rows stream into the new table, unless a primary key must be checked across all of them first.
    let (rows, passed) = if pk.is_empty() {
        write::shaped(input, schema.clone(), Ok)
    } else {
        let limit = db.config().memory_limit;
        let batches = coerce_batches(&write::collect_within(input, limit).await?, &schema)?;
        crate::statements::dml::check_unique_batches(&name, &pk, &batches)?;
        let (rows, passed) = write::shaped(
            write::batch_stream(schema.clone(), batches),
            schema.clone(),
            Ok,
        );
        (rows, passed)
    };
    let lock = db.write_lock(&name);
    let _guard = lock.lock().await;
    db.schema_provider()
        .create_lance_table(&name, schema, rows, or_replace)
        .await
        .map_err(|e| passed.explain(e))?;
    // No rows and no count, as DataFusion answers every CREATE TABLE form (CREATE TABLE … AS too).
    Ok(QueryOutput::Done)
}

/// `CREATE TABLE`: a Lance dataset, not DataFusion's in-memory table.
pub struct CreateTableStatement;

#[async_trait::async_trait]
impl StatementHandler for CreateTableStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        is_sql(statement, |s| matches!(s, Statement::CreateTable(_)))
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match sql_statement(statement, "CREATE TABLE")? {
            Statement::CreateTable(ct) => create_table(session, ct, params).await,
            _ => Err(misrouted("CREATE TABLE")),
        }
    }
}
