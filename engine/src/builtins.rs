//! Marrow's own features, registered with every database [`Database::open`] opens: the statements it runs itself,
//! its table functions, its `CALL` procedures and its optimizer rule. A new feature is registered here, in one line.

use std::sync::Arc;

use crate::catalog::MarrowSchema;
use crate::config::Config;
use crate::database::Database;
use crate::error::Result;
use crate::extension::{Extensions, ParamArg};
use crate::procedures::*;
use crate::statements::{call, copy, create_table, dml, external_table, index, refused, views};
use crate::table_functions::{
    fts_search, hybrid_search, marrow_indexes, marrow_procedures, marrow_versions,
    read_safetensors, vector_search, vector_search_batch,
};

impl Database {
    /// Open (creating if needed) a data directory, take its lock and make sure the built-in tables exist.
    pub async fn open(config: Config) -> Result<Self> {
        Self::open_with(config, builtins).await
    }
}

/// Every statement handler, table function, procedure and optimizer rule Marrow ships.
pub fn builtins(schema: &Arc<MarrowSchema>, config: &Config) -> Extensions {
    let with_procedures = Extensions::default()
        .procedure(restore_table::RestoreTable)
        .procedure(tag_version::TagVersion)
        .procedure(drop_tag::DropTag)
        .procedure(compact_table::CompactTable)
        .procedure(upkeep::Upkeep)
        .procedure(cleanup_versions::CleanupVersions)
        .procedure(import_safetensors::ImportSafetensors)
        .procedure(export_safetensors::ExportSafetensors)
        .procedure(export_gguf::ExportGguf)
        .procedure(quantize_model::QuantizeModel)
        .procedure(drop_model::DropModel)
        .procedure(import_peft::ImportPeft)
        .procedure(export_peft::ExportPeft)
        .procedure(merge_adapter::MergeAdapter)
        .procedure(drop_adapter::DropAdapter);
    let procedures = marrow_procedures::ProceduresFunction::new(with_procedures.procedures());
    with_procedures
        .statement(create_table::CreateTableStatement)
        .statement(dml::DmlStatements)
        .statement(views::ViewStatements)
        .statement(index::IndexStatement)
        .statement(call::CallStatement)
        .statement(copy::CopyStatement)
        .statement(external_table::ExternalTableStatement)
        .statement(refused::RefusedStatement)
        .table_function(
            "vector_search",
            true,
            vector_search::VectorSearchFunction(schema.clone()),
        )
        .with_params(&[(2, ParamArg::VectorFor(1)), (3, ParamArg::Integer)])
        .table_function(
            "fts_search",
            true,
            fts_search::FtsSearchFunction(schema.clone()),
        )
        .with_params(&[(2, ParamArg::Text), (3, ParamArg::Integer)])
        .table_function(
            "hybrid_search",
            true,
            hybrid_search::HybridSearchFunction(schema.clone()),
        )
        .with_params(&[
            (3, ParamArg::Text),
            (4, ParamArg::VectorFor(2)),
            (5, ParamArg::Integer),
            (6, ParamArg::Number),
            (7, ParamArg::Number),
            (8, ParamArg::Number),
            (9, ParamArg::Integer),
        ])
        .table_function(
            "vector_search_batch",
            true,
            vector_search_batch::VectorSearchBatchFunction(schema.clone()),
        )
        .table_function(
            "marrow_indexes",
            false,
            marrow_indexes::IndexesFunction(schema.clone()),
        )
        .table_function(
            "marrow_versions",
            false,
            marrow_versions::VersionsFunction(schema.clone()),
        )
        .table_function("marrow_procedures", false, procedures)
        .table_function(
            "read_safetensors",
            false,
            read_safetensors::ReadSafetensors(config.clone()),
        )
        .optimizer_rule(crate::vector::VectorTopKRule)
        .optimizer_rule(crate::table_functions::fts_rank::FullTextTopKRule)
}
