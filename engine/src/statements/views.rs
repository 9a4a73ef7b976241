//! `CREATE [OR REPLACE] VIEW` and `DROP VIEW`, where Marrow's catalog must decide before DataFusion acts:
//!
//! - DataFusion replaces a view by dropping the old one and registering the new one. A new definition that closes
//!   a cycle must be refused before the old one is gone, and a name that is a table must never be dropped by a
//!   view statement (its data would go with it).
//! - DataFusion's DROP VIEW plans the view to check its type, so a view that no longer plans (its table was
//!   dropped, or a cycle an older version accepted) could not be dropped.

use datafusion::catalog::SchemaProvider;
use datafusion::common::ParamValues;
use datafusion::datasource::TableType;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};

use crate::catalog::views;
use crate::error::{Error, Result};
use crate::extension::StatementHandler;
use crate::session::{QueryOutput, Session};

pub struct ViewStatements;

#[async_trait::async_trait]
impl StatementHandler for ViewStatements {
    fn handles(&self, statement: &DFStatement) -> bool {
        crate::extension::is_sql(statement, |s| {
            matches!(
                s,
                Statement::CreateView(_)
                    | Statement::Drop {
                        object_type: ObjectType::View,
                        ..
                    }
            )
        })
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let DFStatement::Statement(s) = &statement else {
            return Err(crate::extension::misrouted("view"));
        };
        match s.as_ref() {
            Statement::CreateView(cv) => {
                let name = crate::sql::table_name(&cv.name)?;
                let schema = session.database().schema_provider();
                if let Some(kind) = schema.table_type(&name).await? {
                    if kind != TableType::View {
                        return Err(Error::new(
                            crate::error::ErrorKind::AlreadyExists,
                            format!("'{name}' is a table: a view cannot replace it"),
                        ));
                    }
                }
                views::check(&name, &cv.query.to_string(), &schema.view_definitions())?;
                session.run_datafusion(statement, params).await
            }
            Statement::Drop {
                names, if_exists, ..
            } => {
                let schema = session.database().schema_provider();
                // Every name is checked before any is dropped: one statement drops all of them or none.
                let mut found = vec![];
                for name in names {
                    let name = crate::sql::table_name(name)?;
                    match schema.table_type(&name).await? {
                        Some(TableType::View) => found.push(name),
                        Some(_) => {
                            return Err(Error::invalid(format!(
                                "'{name}' is a table, not a view: use DROP TABLE"
                            )))
                        }
                        None if *if_exists => {}
                        None => {
                            return Err(Error::not_found(format!("view '{name}' does not exist")))
                        }
                    }
                }
                for name in found {
                    schema.deregister_table(&name)?;
                }
                Ok(QueryOutput::Done)
            }
            _ => Err(crate::extension::misrouted("view")),
        }
    }
}
