//! [`RunAggregateExec`]: the operator, and its fallback to the
//! `AggregateExec` it replaced for inputs of short runs.

use super::*;

/// A partial aggregate computed run by run; stands in for `agg`, whose
/// input, schema and properties it shares.
#[derive(Debug)]
pub struct RunAggregateExec {
    agg: Arc<AggregateExec>,
    shape: Shape,
    /// See [`RunAggregate::with_min_mean_run`].
    min_mean_run: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    pub(super) fn new(agg: Arc<AggregateExec>, shape: Shape, min_mean_run: usize) -> Self {
        Self {
            agg,
            shape,
            min_mean_run,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The partial aggregate this operator stands in for (what the cluster
    /// codec carries across processes).
    pub fn aggregate(&self) -> &Arc<AggregateExec> {
        &self.agg
    }

    /// See [`RunAggregate::with_min_mean_run`].
    pub fn min_mean_run(&self) -> usize {
        self.min_mean_run
    }

    /// The operator standing in for `agg`, or `None` when [`Shape::of`]
    /// does not accept it (then `agg` runs as it is).
    pub fn try_from_aggregate(agg: Arc<AggregateExec>, min_mean_run: usize) -> Option<Self> {
        let shape = Shape::of(&agg)?;
        Some(Self::new(agg, shape, min_mean_run))
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, name)| format!("{e} as {name}"))
            .collect();
        let aggs: Vec<&str> = self.agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "RunAggregateExec: mode=Partial, gby=[{}], aggr=[{}]",
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.agg.benefits_from_input_partitioning()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::clone(&self.agg).replace_children(children, options)?;
        // New children may change types: what no longer fits stays DataFusion's.
        match agg.downcast_ref::<AggregateExec>().and_then(Shape::of) {
            Some(shape) => {
                let agg = agg
                    .downcast_ref::<AggregateExec>()
                    .map(|a| Arc::new(a.clone()))
                    .ok_or_else(|| internal_datafusion_err!("run aggregate: lost its aggregate"))?;
                Ok(Arc::new(RunAggregateExec::new(
                    agg,
                    shape,
                    self.min_mean_run,
                )))
            }
            None => Ok(agg),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.agg.input().execute(partition, Arc::clone(&context))?;
        let schema = self.agg.schema();
        let mut state = PartitionState {
            key: Arc::clone(&self.shape.key),
            args: self
                .shape
                .aggregates
                .iter()
                .map(|(_, a)| Arc::clone(a))
                .collect(),
            accumulators: self.shape.accumulators()?,
            groups: Groups::default(),
            runs: Vec::new(),
            schema: Arc::clone(&schema),
            batch_size: context.session_config().batch_size().max(1),
            reservation: MemoryConsumer::new(format!("RunAggregateExec[{partition}]"))
                .register(context.memory_pool()),
        };
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let fallbacks = MetricBuilder::new(&self.metrics).counter(FALLBACK_METRIC, partition);
        let agg = Arc::clone(&self.agg);
        let min_mean_run = self.min_mean_run;
        let stream = async_stream::try_stream! {
            let mut input = input;
            // The first batches, with their keys, and how many runs they hold.
            // A run that goes on into the next batch counts once: continuing
            // the last run's group costs a comparison, not a lookup, so
            // small batches do not make long runs look short.
            let mut sample: Vec<(RecordBatch, StringViewArray)> = Vec::new();
            let (mut rows, mut runs) = (0, 0);
            while rows < SAMPLE_ROWS {
                let Some(batch) = input.next().await else { break };
                let batch = batch?;
                let timer = metrics.elapsed_compute().timer();
                let keys = state.keys(&batch)?;
                timer.done();
                if keys.is_empty() {
                    continue;
                }
                rows += keys.len();
                runs += run_count(&keys);
                if let Some((_, before)) = sample.last()
                    && same_key(before, before.len() - 1, &keys, 0)
                {
                    runs -= 1;
                }
                sample.push((batch, keys));
            }
            if runs.saturating_mul(min_mean_run) > rows {
                let out = fallback(
                    &agg,
                    sample.into_iter().map(|(batch, _)| batch).collect(),
                    input,
                    partition,
                    context,
                    &metrics,
                    &fallbacks,
                );
                for await batch in out {
                    yield batch?;
                }
            } else {
                let mut sample = sample.into_iter();
                loop {
                    let (batch, keys) = match sample.next() {
                        Some((batch, keys)) => (batch, Some(keys)),
                        None => match input.next().await {
                            Some(batch) => (batch?, None),
                            None => break,
                        },
                    };
                    let timer = metrics.elapsed_compute().timer();
                    let keys = match keys {
                        Some(keys) => keys,
                        None => state.keys(&batch)?,
                    };
                    state.update(&batch, &keys)?;
                    let out = state.emit_if_full()?;
                    timer.done();
                    for batch in out {
                        metrics.record_output(batch.num_rows());
                        yield batch;
                    }
                }
                let timer = metrics.elapsed_compute().timer();
                let out = state.emit()?;
                timer.done();
                for batch in out {
                    metrics.record_output(batch.num_rows());
                    yield batch;
                }
            }
            metrics.done();
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The output of `agg` (DataFusion's partial aggregate this operator
/// replaced) over `sample`, the batches this partition has already read,
/// followed by the rest of `input`: what the partition would have produced
/// without the rewrite, each input batch read once.
pub(super) fn fallback(
    agg: &Arc<AggregateExec>,
    sample: Vec<RecordBatch>,
    input: SendableRecordBatchStream,
    partition: usize,
    context: Arc<TaskContext>,
    metrics: &BaselineMetrics,
    fallbacks: &CountMetric,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + use<> {
    fallbacks.add(1);
    let metrics = metrics.clone();
    let replay = Arc::new(Replay {
        properties: Arc::clone(agg.input().properties()),
        schema: agg.input().schema(),
        batches: Mutex::new(Some((sample, input))),
    });
    // Same input schema and properties: the aggregate's own are kept.
    let plan = Arc::clone(agg).replace_children(
        vec![replay],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    );
    async_stream::try_stream! {
        let plan = plan?;
        let mut out = plan.execute(partition, context)?;
        while let Some(batch) = out.next().await {
            let batch = batch?;
            metrics.record_output(batch.num_rows());
            yield batch;
        }
        // The aggregate's own compute time, so EXPLAIN ANALYZE shows it here.
        if let Some(nanos) = plan.metrics().and_then(|m| m.elapsed_compute()) {
            metrics
                .elapsed_compute()
                .add_duration(Duration::from_nanos(nanos as u64));
        }
    }
}

/// The input of a [`fallback`] aggregate: batches already read from one
/// partition's input, then the rest of that input. Executes once.
struct Replay {
    properties: Arc<PlanProperties>,
    schema: SchemaRef,
    batches: Mutex<Option<(Vec<RecordBatch>, SendableRecordBatchStream)>>,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl DisplayAs for Replay {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl ExecutionPlan for Replay {
    fn name(&self) -> &str {
        "Replay"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(internal_datafusion_err!(
                "run aggregate: replay has no children"
            ))
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// The one partition it stands for, whatever `_partition` says: the
    /// aggregate above executes its input's partition of its own number.
    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (sample, rest) = self
            .batches
            .lock()
            .map_err(|_| internal_datafusion_err!("run aggregate: replay lock poisoned"))?
            .take()
            .ok_or_else(|| internal_datafusion_err!("run aggregate: replay executed twice"))?;
        let stream = futures::stream::iter(sample.into_iter().map(Ok)).chain(rest);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}
