//! Statements Marrow refuses on purpose, each with the reason and what to use instead.

use datafusion::common::ParamValues;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};

use crate::error::{Error, Result};
use crate::extension::StatementHandler;
use crate::session::{QueryOutput, Session};

pub struct RefusedStatement;

fn refusal(statement: &DFStatement) -> Option<&'static str> {
    let DFStatement::Statement(s) = statement else {
        return None;
    };
    match s.as_ref() {
        Statement::Merge(_) => {
            Some("MERGE is not supported; use INSERT … ON CONFLICT (key) DO UPDATE SET …")
        }
        Statement::AlterTable(_) => Some("ALTER TABLE is not supported yet"),
        Statement::CreateFunction(_) | Statement::DropFunction(_) => Some(
            "user-defined SQL functions are not supported; Marrow's functions are built in (docs/sql-functions.md)",
        ),
        Statement::CreateSchema { .. } | Statement::CreateDatabase { .. } => {
            Some("Marrow has one schema (marrow.public); CREATE SCHEMA/DATABASE is not supported")
        }
        Statement::Drop {
            object_type: ObjectType::Schema | ObjectType::Database,
            ..
        } => Some("Marrow has one schema (marrow.public); it cannot be dropped"),
        _ => None,
    }
}

#[async_trait::async_trait]
impl StatementHandler for RefusedStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        refusal(statement).is_some()
    }

    async fn run(
        &self,
        _session: &Session,
        statement: DFStatement,
        _params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        Err(Error::unsupported(
            refusal(&statement).unwrap_or("statement not supported"),
        ))
    }
}
