//! One partition's state: its groups, numbered in order of appearance, and
//! the run boundaries of each batch's keys.

use super::*;

/// One partition's groups and accumulators.
pub(super) struct PartitionState {
    pub(super) key: Arc<dyn PhysicalExpr>,
    pub(super) args: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) accumulators: Vec<Box<dyn RunAccumulator>>,
    pub(super) groups: Groups,
    /// Scratch: the current batch's runs.
    pub(super) runs: Vec<Run>,
    pub(super) schema: SchemaRef,
    pub(super) batch_size: usize,
    /// What the groups, their keys and state hold, in the task's memory pool.
    pub(super) reservation: MemoryReservation,
}

impl PartitionState {
    /// The group key of every row of `batch`.
    pub(super) fn keys(&self, batch: &RecordBatch) -> Result<StringViewArray> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        keys.as_string_view_opt()
            .cloned()
            .ok_or_else(|| internal_datafusion_err!("run aggregate: key is {}", keys.data_type()))
    }

    /// Folds `batch`, whose group keys are `keys`, into the groups.
    pub(super) fn update(&mut self, batch: &RecordBatch, keys: &StringViewArray) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        self.runs.clear();
        self.groups.runs(keys, &mut self.runs);
        for (acc, arg) in self.accumulators.iter_mut().zip(&self.args) {
            let value = arg.evaluate(batch)?;
            acc.update(&value, &self.runs, self.groups.len(), rows)?;
        }
        Ok(())
    }

    /// Bytes held for the groups.
    pub(super) fn size(&self) -> usize {
        self.groups.size()
            + self.runs.capacity() * size_of::<Run>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Every group's state if the groups are past their limits or the memory
    /// pool will not hold them, as DataFusion's partial aggregate emits
    /// early: the final aggregate merges a group emitted twice.
    pub(super) fn emit_if_full(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.groups.is_full() && self.reservation.try_resize(self.size()).is_ok() {
            return Ok(Vec::new());
        }
        self.emit()
    }

    /// Every group's partial state, in batches of at most `batch_size` rows; starts over.
    pub(super) fn emit(&mut self) -> Result<Vec<RecordBatch>> {
        let n = self.groups.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.groups.take_keys())];
        for acc in &mut self.accumulators {
            columns.extend(acc.take_state());
        }
        let all = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        // What is left is empty vectors (the scratch runs aside).
        self.reservation.resize(self.size());
        Ok((0..n)
            .step_by(self.batch_size)
            .map(|at| all.slice(at, self.batch_size.min(n - at)))
            .collect())
    }
}

/// The distinct keys of a partition, numbered in order of appearance.
#[derive(Default)]
pub(super) struct Groups {
    pub(super) index: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// Each group's key; `None` for the NULL key.
    pub(super) keys: Vec<Option<Box<str>>>,
    pub(super) null_group: Option<u32>,
    pub(super) key_bytes: usize,
    /// The group of the last run, which the next run most often continues
    /// (a run split by a batch boundary or by views that differ).
    pub(super) last: Option<u32>,
}

impl Groups {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn is_full(&self) -> bool {
        self.keys.len() >= MAX_GROUPS || self.key_bytes >= MAX_KEY_BYTES
    }

    /// Bytes held: the index, the keys in order, and each key's bytes twice
    /// (once in each).
    pub(super) fn size(&self) -> usize {
        self.index.capacity() * (size_of::<(Box<str>, u32)>() + 1)
            + self.keys.capacity() * size_of::<Option<Box<str>>>()
            + 2 * self.key_bytes
    }

    /// Appends the runs of equal keys of `keys` to `runs`.
    pub(super) fn runs(&mut self, keys: &StringViewArray, runs: &mut Vec<Run>) {
        let mut start = 0;
        run_starts(keys, |i| {
            runs.push(self.run(keys, start, i));
            start = i;
        });
        if start < keys.len() {
            runs.push(self.run(keys, start, keys.len()));
        }
    }

    pub(super) fn run(&mut self, keys: &StringViewArray, start: usize, end: usize) -> Run {
        let key = keys.is_valid(start).then(|| keys.value(start));
        let group = self.group(key);
        self.last = Some(group);
        Run {
            group,
            start,
            len: end - start,
        }
    }

    pub(super) fn group(&mut self, key: Option<&str>) -> u32 {
        let Some(key) = key else {
            if let Some(g) = self.null_group {
                return g;
            }
            let g = self.keys.len() as u32;
            self.keys.push(None);
            self.null_group = Some(g);
            return g;
        };
        if let Some(last) = self.last
            && self.keys[last as usize].as_deref() == Some(key)
        {
            return last;
        }
        if let Some(&g) = self.index.get(key) {
            return g;
        }
        let g = self.keys.len() as u32;
        self.keys.push(Some(key.into()));
        self.index.insert(key.into(), g);
        self.key_bytes += key.len();
        g
    }

    /// The keys as a column, in group order; forgets every group.
    pub(super) fn take_keys(&mut self) -> StringViewArray {
        let mut builder = StringViewBuilder::with_capacity(self.keys.len());
        for key in self.keys.drain(..) {
            builder.append_option(key);
        }
        *self = Groups::default();
        builder.finish()
    }
}

/// Calls `f` with the index of every row but the first that starts a run:
/// a row whose view (or validity) differs from the row before.
#[inline(always)]
pub(super) fn run_starts(keys: &StringViewArray, mut f: impl FnMut(usize)) {
    let views = keys.views();
    match keys.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for i in 1..views.len() {
                if views[i] != views[i - 1] {
                    f(i);
                }
            }
        }
        Some(nulls) => {
            for i in 1..views.len() {
                let (now, before) = (nulls.is_valid(i), nulls.is_valid(i - 1));
                if now != before || (now && views[i] != views[i - 1]) {
                    f(i);
                }
            }
        }
    }
}

/// How many runs [`Groups::runs`] would find in `keys`.
pub(super) fn run_count(keys: &StringViewArray) -> usize {
    if keys.is_empty() {
        return 0;
    }
    let mut runs = 1;
    run_starts(keys, |_| runs += 1);
    runs
}

/// Whether row `i` of `a` and row `j` of `b` hold the same key (both NULL
/// counts as the same: NULL is one group).
pub(super) fn same_key(a: &StringViewArray, i: usize, b: &StringViewArray, j: usize) -> bool {
    match (a.is_valid(i), b.is_valid(j)) {
        (true, true) => a.value(i) == b.value(j),
        (valid_a, valid_b) => valid_a == valid_b,
    }
}
