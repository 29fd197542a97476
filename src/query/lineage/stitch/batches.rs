//! Output batches of a stitching, cut from the pieces of owner rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayData, ArrayRef, BooleanArray, BooleanBufferBuilder, Int64Array, MutableArrayData,
    RecordBatch, RecordBatchOptions, make_array,
};
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
        // The batch's owner row ranges, each with its viewer and whether
        // the viewer inherits it.
        let mut ranges: Vec<(usize, usize, i64, bool)> = Vec::new();
        let mut rows = 0;
        while rows < self.batch_size {
            let Some(piece) = self.pieces.get(self.next.0) else {
                break;
            };
            let from = piece.start + self.next.1;
            let take_n = (piece.end - from).min(self.batch_size - rows);
            ranges.push((
                from,
                from + take_n,
                piece.viewer,
                piece.owner != piece.viewer,
            ));
            rows += take_n;
            if from + take_n == piece.end {
                self.next = (self.next.0 + 1, 0);
            } else {
                self.next.1 += take_n;
            }
        }
        if rows == 0 {
            return None;
        }
        Some(self.build(&ranges, rows))
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

    /// Owner columns are copied a range at a time (a piece is a run of
    /// consecutive owner rows), not gathered row by row.
    fn build(&self, ranges: &[(usize, usize, i64, bool)], rows: usize) -> DFResult<RecordBatch> {
        let mut viewers = Vec::with_capacity(rows);
        let mut inherited = BooleanBufferBuilder::new(rows);
        for &(from, to, viewer, inherits) in ranges {
            viewers.extend(std::iter::repeat_n(viewer, to - from));
            inherited.append_n(to - from, inherits);
        }
        let viewers: ArrayRef = Arc::new(Int64Array::from(viewers));
        let inherited: ArrayRef = Arc::new(BooleanArray::new(inherited.finish(), None));
        let batches = self.points.batches();
        let owner_schema = batches[0].schema();
        // The owner batches this output batch copies from (a family's
        // owners span hundreds), each row range split where a batch ends.
        let mut used: Vec<usize> = Vec::new();
        let mut source_of: HashMap<usize, usize> = HashMap::new();
        let mut copies: Vec<(usize, usize, usize)> = Vec::new();
        for &(from, to, ..) in ranges {
            let mut row = from;
            while row < to {
                let (batch, at) = self.points.locate(row);
                let n = (to - row).min(batches[batch].num_rows() - at);
                let source = *source_of.entry(batch).or_insert_with(|| {
                    used.push(batch);
                    used.len() - 1
                });
                copies.push((source, at, at + n));
                row += n;
            }
        }
        let columns = self
            .outputs
            .iter()
            .map(|out| -> DFResult<ArrayRef> {
                Ok(match out.owner_column() {
                    Some(name) => {
                        let index = owner_schema.index_of(name)?;
                        let data: Vec<ArrayData> = used
                            .iter()
                            .map(|&b| batches[b].column(index).to_data())
                            .collect();
                        let mut copied = MutableArrayData::new(data.iter().collect(), false, rows);
                        for &(source, from, to) in &copies {
                            copied.try_extend(source, from, to)?;
                        }
                        make_array(copied.freeze())
                    }
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
