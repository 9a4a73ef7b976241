//! `marrow_procedures()`: every `CALL` procedure with its arguments and what it does, from its registration.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result as DFResult;

use super::{plan_err, Listing};
use crate::extension::{signature, Procedure};

/// The procedures' rows, taken when the function is registered (procedures do not change while a database is open).
#[derive(Debug)]
pub struct ProceduresFunction(RecordBatch);

fn procedures_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("signature", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
    ]))
}

impl ProceduresFunction {
    pub fn new<'a>(procedures: impl IntoIterator<Item = &'a Arc<dyn Procedure>>) -> Self {
        let list: Vec<_> = procedures.into_iter().collect();
        let column = |f: &dyn Fn(&dyn Procedure) -> String| -> Arc<StringArray> {
            Arc::new(list.iter().map(|p| Some(f(p.as_ref()))).collect())
        };
        let batch = RecordBatch::try_new(
            procedures_schema(),
            vec![
                column(&|p| p.name().to_string()),
                column(&|p| signature(p)),
                column(&|p| p.doc().to_string()),
            ],
        )
        .expect("procedure rows match their schema");
        Self(batch)
    }
}

impl TableFunctionImpl for ProceduresFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return Err(plan_err("marrow_procedures() takes no arguments"));
        }
        let batch = self.0.clone();
        Ok(Listing::new(procedures_schema(), move || {
            let batch = batch.clone();
            Box::pin(async move { Ok(batch) })
        }))
    }
}
