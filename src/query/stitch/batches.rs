//! Output batches of a stitching, cut from the pieces of owner rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use datafusion::error::Result as DFResult;

use super::Out;
use super::owner_points::{OwnerPoints, Piece};

/// Output batches cut from the pieces, `batch_size` rows at a time.
pub(super) struct Batches {
    points: OwnerPoints,
    pieces: Vec<Piece>,
    /// Next piece and the row offset within it.
    next: (usize, usize),
    batch_size: usize,
    schema: SchemaRef,
    outputs: Vec<Out>,
}
impl Iterator for Batches {
    type Item = DFResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut indices: Vec<u32> = Vec::with_capacity(self.batch_size);
        let mut viewers: Vec<i64> = Vec::with_capacity(self.batch_size);
        let mut inherited: Vec<bool> = Vec::with_capacity(self.batch_size);
        while indices.len() < self.batch_size {
            let Some(piece) = self.pieces.get(self.next.0) else {
                break;
            };
            let from = piece.start + self.next.1;
            let take_n = (piece.end - from).min(self.batch_size - indices.len());
            indices.extend((from..from + take_n).map(|i| i as u32));
            viewers.extend(std::iter::repeat_n(piece.viewer, take_n));
            inherited.extend(std::iter::repeat_n(piece.owner != piece.viewer, take_n));
            if from + take_n == piece.end {
                self.next = (self.next.0 + 1, 0);
            } else {
                self.next.1 += take_n;
            }
        }
        if indices.is_empty() {
            return None;
        }
        Some(self.build(indices, viewers, inherited))
    }
}

impl Batches {
    pub(super) fn new(
        points: OwnerPoints,
        pieces: Vec<Piece>,
        batch_size: usize,
        schema: SchemaRef,
        outputs: Vec<Out>,
    ) -> Self {
        Self {
            points,
            pieces,
            next: (0, 0),
            batch_size,
            schema,
            outputs,
        }
    }

    fn build(
        &self,
        indices: Vec<u32>,
        viewers: Vec<i64>,
        inherited: Vec<bool>,
    ) -> DFResult<RecordBatch> {
        let rows = indices.len();
        let indices = UInt32Array::from(indices);
        let viewers: ArrayRef = Arc::new(Int64Array::from(viewers));
        let inherited: ArrayRef = Arc::new(BooleanArray::from(inherited));
        let owner_schema = self.points.batch.schema();
        let columns = self
            .outputs
            .iter()
            .map(|out| -> DFResult<ArrayRef> {
                Ok(match out.owner_column() {
                    Some(name) => take(
                        self.points.batch.column(owner_schema.index_of(name)?),
                        &indices,
                        None,
                    )?,
                    None if *out == Out::RunId => viewers.clone(),
                    None => inherited.clone(),
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}
