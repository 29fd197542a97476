//! Where an admitted query's plan runs: in this process, or on a cluster
//! (the cluster module), chosen once when the engine opens. Planning is always
//! done here, by the same session, so both answer the same SQL the same way.

use std::fmt;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;

use crate::error::Result;

/// Runs planned queries.
#[async_trait]
pub trait PlanRunner: Send + Sync + fmt::Debug {
    /// Starts `df`'s plan and streams its rows.
    async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream>;

    /// Where plans run, for logs and `system` tables.
    fn describe(&self) -> String;
}

/// Runs plans on this process's DataFusion runtime.
#[derive(Debug, Default)]
pub struct InProcess;

#[async_trait]
impl PlanRunner for InProcess {
    async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        Ok(df.execute_stream().await?)
    }

    fn describe(&self) -> String {
        "in process".to_string()
    }
}

/// Every batch of `stream`.
pub async fn collect(stream: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
    Ok(stream.try_collect().await?)
}
