//! A pass-through execution node: it names a step in EXPLAIN (which path a vector query took) or counts the rows
//! flowing through it (export progress), and hands its input's batches on unchanged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

#[derive(Debug)]
pub struct PassExec {
    name: &'static str,
    input: Arc<dyn ExecutionPlan>,
    description: String,
    rows: Option<Arc<AtomicU64>>,
    properties: Arc<PlanProperties>,
    /// Whether DataFusion may spread the input over more partitions (not for a handful of rows).
    parallel_input: bool,
}

impl PassExec {
    /// A node shown in EXPLAIN as `name: description`.
    pub(crate) fn new(
        name: &'static str,
        input: Arc<dyn ExecutionPlan>,
        description: String,
    ) -> Self {
        let properties = input.properties().clone();
        Self {
            name,
            input,
            description,
            rows: None,
            properties,
            parallel_input: true,
        }
    }

    /// Keep the input as it is: a few rows gain nothing from a repartition but its task hand-offs.
    pub(crate) fn serial(mut self) -> Self {
        self.parallel_input = false;
        self
    }

    /// A node that adds the number of rows passing through to `rows`.
    pub(crate) fn counting(
        name: &'static str,
        input: Arc<dyn ExecutionPlan>,
        rows: Arc<AtomicU64>,
    ) -> Self {
        Self {
            rows: Some(rows),
            ..Self::new(name, input, String::new())
        }
    }
}

impl DisplayAs for PassExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if self.description.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}: {}", self.name, self.description)
        }
    }
}

impl ExecutionPlan for PassExec {
    fn name(&self) -> &str {
        self.name
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![self.parallel_input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let [child] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal(format!("{} takes one child", self.name)))?;
        let properties = child.properties().clone();
        Ok(Arc::new(Self {
            name: self.name,
            input: child,
            description: self.description.clone(),
            rows: self.rows.clone(),
            properties,
            parallel_input: self.parallel_input,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let Some(rows) = self.rows.clone() else {
            return Ok(stream);
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stream.schema(),
            stream.inspect(move |b| {
                if let Ok(b) = b {
                    rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                }
            }),
        )))
    }
}
