//! Bulk ingest (`CommandStatementIngest`, ADBC's `adbc_ingest`): the Arrow batches of a DoPut stream into a table
//! through the engine's ingest, in one commit, decoded as the engine writes them.

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use marrow_engine::ingest::IngestMode;
use tonic::Request;

use super::encode::read_stream;
use super::{call_context, MarrowFlightService};
use crate::error::{Error, Result};

impl MarrowFlightService {
    /// Bulk ingest: the batches of the DoPut stream into a table, in one commit.
    pub(super) async fn ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64> {
        let ctx = call_context(&request)?;
        if cmd.transaction_id.is_some() {
            return Err(Error::no_transactions());
        }
        if cmd.temporary {
            return Err(Error::unimplemented("temporary tables are not supported"));
        }
        let catalog = cmd.catalog.as_deref().filter(|c| !c.is_empty());
        let schema_name = cmd.schema.as_deref().filter(|s| !s.is_empty());
        if catalog.is_some_and(|c| c != marrow_engine::CATALOG)
            || schema_name.is_some_and(|s| s != marrow_engine::SCHEMA)
        {
            return Err(Error::not_found(format!(
                "Marrow's tables live in {}.{}",
                marrow_engine::CATALOG,
                marrow_engine::SCHEMA
            )));
        }
        let (mode, must_exist) = ingest_mode(&cmd)?;
        let session = ctx.session();
        if must_exist
            && !session
                .engine()
                .context()
                .table_exist(cmd.table.as_str())
                .unwrap_or(false)
        {
            return Err(Error::not_found(format!("table '{}' not found", cmd.table)));
        }
        let (schema, rows, failure) = read_stream(request.into_inner()).await?;
        let schema =
            schema.ok_or_else(|| Error::invalid("ingest needs an Arrow schema message"))?;
        let n = session
            .engine()
            .ingest_stream(&cmd.table, mode, schema, rows)
            .await
            .map_err(|e| failure.explain(e.into()))?;
        Ok(n as i64)
    }
}

/// The engine's ingest mode for a command's table options, and whether the table must exist already.
fn ingest_mode(cmd: &CommandStatementIngest) -> Result<(IngestMode, bool)> {
    let options = cmd.table_definition_options.ok_or_else(|| {
        Error::invalid("ingest needs table_definition_options (if_not_exist, if_exists)")
    })?;
    let not_exist = TableNotExistOption::try_from(options.if_not_exist)
        .unwrap_or(TableNotExistOption::Unspecified);
    let exists =
        TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified);
    // The bool: the table must exist (if_not_exist = FAIL with REPLACE).
    Ok(match (not_exist, exists) {
        (TableNotExistOption::Create, TableExistsOption::Fail) => (IngestMode::Create, false),
        (TableNotExistOption::Fail, TableExistsOption::Append) => (IngestMode::Append, false),
        (TableNotExistOption::Create, TableExistsOption::Replace) => (IngestMode::Replace, false),
        (TableNotExistOption::Create, TableExistsOption::Append) => {
            (IngestMode::CreateAppend, false)
        }
        (TableNotExistOption::Fail, TableExistsOption::Replace) => (IngestMode::Replace, true),
        (n, e) => {
            return Err(Error::invalid(format!(
                "unsupported ingest options: if_not_exist = {}, if_exists = {}",
                n.as_str_name(),
                e.as_str_name()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_modes() {
        use arrow_flight::sql::TableDefinitionOptions;
        let cmd = |n: TableNotExistOption, e: TableExistsOption| CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: n as i32,
                if_exists: e as i32,
            }),
            table: "t".into(),
            ..Default::default()
        };
        use TableExistsOption as E;
        use TableNotExistOption as N;
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Fail)).unwrap(),
            (IngestMode::Create, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Fail, E::Append)).unwrap(),
            (IngestMode::Append, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Replace)).unwrap(),
            (IngestMode::Replace, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Append)).unwrap(),
            (IngestMode::CreateAppend, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Fail, E::Replace)).unwrap(),
            (IngestMode::Replace, true)
        );
        assert!(ingest_mode(&cmd(N::Fail, E::Fail)).is_err());
        assert!(ingest_mode(&cmd(N::Unspecified, E::Append)).is_err());
        assert!(ingest_mode(&CommandStatementIngest::default()).is_err());
    }
}
