//! `CREATE EXTERNAL TABLE`: DataFusion reads the files, but only under the import root (`--import-root`).

use datafusion::common::ParamValues;
use datafusion::sql::parser::Statement as DFStatement;

use crate::error::Result;
use crate::extension::{misrouted, StatementHandler};
use crate::fence;
use crate::session::{QueryOutput, Session};

pub struct ExternalTableStatement;

#[async_trait::async_trait]
impl StatementHandler for ExternalTableStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        matches!(statement, DFStatement::CreateExternalTable(_))
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let DFStatement::CreateExternalTable(mut cet) = statement else {
            return Err(misrouted("CREATE EXTERNAL TABLE"));
        };
        let resolved = fence::check_import(session.database().config(), &cet.location)?;
        // A trailing slash is how DataFusion tells a directory (of files yet to be written) from a file.
        let slash = if cet.location.ends_with('/') { "/" } else { "" };
        cet.location = format!("{}{slash}", resolved.to_string_lossy());
        session
            .run_datafusion(DFStatement::CreateExternalTable(cet), params)
            .await
    }
}
