//! Store maintenance: `compact` merges small files and clusters them by run,
//! `check` verifies that every file the current snapshots
//! reference is there and readable, `vacuum` deletes the files no snapshot
//! within the retention period needs, `purge` removes deleted runs' rows.

pub mod check;
pub mod compact;
pub mod purge;
pub mod vacuum;

pub use check::{CheckReport, TableCheck, check};
pub use purge::{PurgeReport, purge};
pub use vacuum::{TableVacuum, VacuumOptions, VacuumReport, vacuum};

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::prelude::{Expr, SessionContext};

use crate::engine::Engine;
use crate::error::Result;
use crate::query::scan::FileSetTable;
use crate::store::schema::arrow_schema;
use crate::store::{DataFile, TableKind};

/// Rows of `files` that `keep` (if any) lets through, in the table's own types.
async fn read_files(
    ctx: &SessionContext,
    engine: &Engine,
    kind: TableKind,
    files: Vec<DataFile>,
    keep: Option<Expr>,
) -> Result<Vec<RecordBatch>> {
    let schema = arrow_schema(kind);
    let input = FileSetTable::new(
        schema.clone(),
        engine.store().location().object_store_url(),
        files,
    );
    let mut frame = ctx.read_table(Arc::new(input))?;
    if let Some(keep) = keep {
        frame = frame.filter(keep)?;
    }
    let mut batches = Vec::new();
    for batch in frame.collect().await? {
        // Strings come back as views; store them as the table's own types.
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(batches)
}
