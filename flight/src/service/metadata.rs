//! Catalog listings (GetCatalogs, GetDbSchemas, GetTables, GetTableTypes): what a session's DataFusion context
//! sees, built with arrow-flight's metadata builders, which apply the request's filters.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::compute::kernels::comparison::like;
use arrow::datatypes::{Schema, SchemaRef};
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

impl MarrowFlightService {
    /// FlightInfo for a listing: the ticket builds it at DoGet, in the caller's session.
    pub(super) fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        pending: Pending,
    ) -> Result<Response<FlightInfo>> {
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

/// The items whose name matches a Flight SQL filter pattern, by the LIKE kernel the builders filter with: applied
/// before tables are opened, so a narrow pattern opens only the tables it names.
fn matching<T>(items: Vec<T>, pattern: Option<&str>, name: impl Fn(&T) -> &str) -> Result<Vec<T>> {
    let Some(pattern) = pattern else {
        return Ok(items);
    };
    let names = StringArray::from_iter_values(items.iter().map(name));
    let keep = like(&names, &StringArray::new_scalar(pattern))
        .map_err(|e| Error::internal("listing tables", e))?;
    Ok(items
        .into_iter()
        .zip(keep.iter())
        .filter_map(|(item, k)| k.unwrap_or(false).then_some(item))
        .collect())
}

pub(super) async fn tables(engine: &Session, cmd: CommandGetTables) -> Result<RecordBatch> {
    let catalog_filter = cmd.catalog.clone();
    let schema_pattern = cmd.db_schema_filter_pattern.clone();
    let table_pattern = cmd.table_name_filter_pattern.clone();
    let include_schema = cmd.include_schema;
    let mut builder = cmd.into_builder();
    let ctx = engine.context();
    let empty: SchemaRef = Arc::new(Schema::empty());
    let schemas = list_schemas(engine)
        .into_iter()
        .filter(|(catalog, _)| catalog_filter.as_ref().is_none_or(|c| c == catalog))
        .collect();
    for (catalog, schema) in matching(schemas, schema_pattern.as_deref(), |(_, s)| s)? {
        let names = table_names(engine, &catalog, &schema);
        for table in matching(names, table_pattern.as_deref(), |t| t)? {
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
    let mut builder = cmd.into_builder();
    for (catalog, schema) in list_schemas(engine) {
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

    /// The patterns the hand-written matcher this replaced was tested with: the kernel agrees on all of them.
    #[test]
    fn like_patterns() {
        let like = |p: &str, s: &str| matching(vec![s], Some(p), |s| s).unwrap().len() == 1;
        assert!(like("%", ""));
        assert!(like("mem%", "memories"));
        assert!(like("m_m%", "memories"));
        assert!(!like("m_m", "memories"));
        assert!(like("memories", "memories"));
        assert!(!like("Memories", "memories"));
        assert!(like("a\\_b", "a_b"));
        assert!(!like("a\\_b", "axb"));
        assert!(like("%ies", "memories"));
    }
}
