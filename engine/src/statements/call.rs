//! `CALL name(args…)`: runs a registered procedure (see `procedures/`) and returns its one row.

use datafusion::common::ParamValues;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Statement};

use crate::error::{Error, Result};
use crate::extension::{is_sql, misrouted, sql_statement, Args, StatementHandler};
use crate::session::{QueryOutput, Session};

pub struct CallStatement;

#[async_trait::async_trait]
impl StatementHandler for CallStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        is_sql(statement, |s| matches!(s, Statement::Call(_)))
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let Statement::Call(function) = sql_statement(statement, "CALL")? else {
            return Err(misrouted("CALL"));
        };
        let name = function.name.to_string().to_lowercase();
        let procedure = session
            .database()
            .extensions()
            .find_procedure(&name)?
            .clone();
        let args: Vec<String> = match &function.args {
            FunctionArguments::None => vec![],
            FunctionArguments::List(list) => list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
                    other => Err(Error::invalid(format!(
                        "CALL {name}: argument {other} must be a plain value"
                    ))),
                })
                .collect::<Result<_>>()?,
            FunctionArguments::Subquery(_) => {
                return Err(Error::invalid(format!(
                    "CALL {name}: arguments must be values"
                )))
            }
        };
        let values = session.eval_constants(&args, params).await?;
        let args = Args::new(procedure.as_ref(), values)?;
        let batch = procedure.call(session, args).await?;
        Ok(QueryOutput::Rows(Box::pin(RecordBatchStreamAdapter::new(
            batch.schema(),
            futures::stream::iter(vec![Ok(batch)]),
        ))))
    }
}
