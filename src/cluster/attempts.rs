//! Shuffle files named by the stage attempt that wrote them, and tasks that
//! refuse input from two attempts of one stage.
//!
//! When an executor is lost, Ballista 55 restarts a running stage whose
//! input was on it from scratch, under a new attempt number and with task
//! ids counted from 0 again. The files its first attempt had already handed
//! on stay listed as input of the stages that read it, so those stages read
//! the restarted tasks' rows and the first attempt's again: sums and counts
//! came out 1.5 times too large after an executor was killed mid-query. The
//! scheduler offers no hook to withdraw them, so the executors make the
//! mix visible instead: each shuffle file's id carries its stage attempt in
//! the high 32 bits (Ballista only ever uses a file id to name the file),
//! and a task whose input holds files of two attempts of one stage fails
//! with [`MIXED_ATTEMPTS`]. The job fails; the client (`Remote`) submits the
//! query again, whole, on the executors that remain.
//!
//! Two attempts also meet after a lawful partial re-run (the lost tasks of
//! a finished stage run again beside the surviving ones); telling the two
//! cases apart would take which partitions each task covered, which the
//! file list does not say. Re-running the query is the sound answer to both.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use ballista_core::JobId;
use ballista_core::execution_plans::ShuffleReaderExec;
use ballista_core::serde::protobuf::{ShuffleWritePartition, TaskColumnStats};
use ballista_executor::execution_engine::{ExecutionEngine, QueryStageExecutor};
use datafusion::common::exec_err;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::context::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionConfig;

/// The words of the error a task fails with when its input mixes attempts;
/// the client recognises a job failed for this reason by them.
pub const MIXED_ATTEMPTS: &str = "shuffle input from more than one attempt of stage";

/// Whether `error` (as Ballista carries it, text inside text) is a job that
/// failed because a task's input mixed attempts of a stage.
pub fn is_mixed_attempts(error: &impl fmt::Display) -> bool {
    error.to_string().contains(MIXED_ATTEMPTS)
}

/// An [`ExecutionEngine`] that runs `inner`'s stages with attempt-tagged
/// file ids and checks each task's input first.
pub struct AttemptTagging {
    inner: Arc<dyn ExecutionEngine>,
}

impl AttemptTagging {
    pub fn new(inner: Arc<dyn ExecutionEngine>) -> Self {
        Self { inner }
    }
}

impl ExecutionEngine for AttemptTagging {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        // The stage attempt is known only from the task context the stage
        // runs with, so the writer is made when it runs.
        Ok(Arc::new(TaggedStage {
            engine: self.inner.clone(),
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir: work_dir.to_string(),
            config: config.clone(),
            stage: OnceLock::new(),
        }))
    }
}

struct TaggedStage {
    engine: Arc<dyn ExecutionEngine>,
    job_id: JobId,
    stage_id: usize,
    task_id: usize,
    global_output_partition_ids: Vec<usize>,
    plan: Arc<dyn ExecutionPlan>,
    work_dir: String,
    config: SessionConfig,
    stage: OnceLock<Arc<dyn QueryStageExecutor>>,
}

#[async_trait]
impl QueryStageExecutor for TaggedStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        single_attempt_inputs(&self.plan)?;
        let attempt = context.task_id().as_deref().and_then(stage_attempt);
        let stage = self.engine.create_query_stage_exec(
            self.job_id.clone(),
            self.stage_id,
            file_id(attempt, self.task_id),
            self.global_output_partition_ids.clone(),
            self.plan.clone(),
            &self.work_dir,
            &self.config,
        )?;
        let stage = self.stage.get_or_init(|| stage).clone();
        stage.execute_query_stage(task_id, context).await
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.stage
            .get()
            .map(|s| s.collect_plan_metrics())
            .unwrap_or_default()
    }

    fn collect_runtime_stats_reports(
        &self,
    ) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.stage
            .get()
            .map(|s| s.collect_runtime_stats_reports())
            .unwrap_or_default()
    }

    fn collect_window_state_reports(
        &self,
    ) -> Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        match self.stage.get() {
            Some(s) => s.collect_window_state_reports(),
            None => Ok(Vec::new()),
        }
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.stage
            .get()
            .map(|s| s.collect_column_stats())
            .unwrap_or_default()
    }
}

impl fmt::Debug for TaggedStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage.get() {
            Some(stage) => fmt::Debug::fmt(stage, f),
            None => write!(f, "TaggedStage({}/{}, not run)", self.job_id, self.stage_id),
        }
    }
}

impl fmt::Display for TaggedStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage.get() {
            Some(stage) => fmt::Display::fmt(stage, f),
            None => write!(f, "stage {}/{} (not run)", self.job_id, self.stage_id),
        }
    }
}

/// The file id a task's shuffle files get: its stage attempt above its task
/// id, which alone is unique only within one attempt.
fn file_id(attempt: Option<u32>, task_id: usize) -> usize {
    match attempt {
        Some(attempt) => ((attempt as usize) << 32) | (task_id & 0xFFFF_FFFF),
        None => task_id,
    }
}

/// The attempt a file id says it was written by.
fn attempt_of(file_id: u64) -> u64 {
    file_id >> 32
}

/// The stage attempt in Ballista's task identity,
/// `TID {job}/{stage}.{attempt}/{task}.{task attempt}`.
fn stage_attempt(identity: &str) -> Option<u32> {
    let stage = identity.strip_prefix("TID ")?.split('/').nth(1)?;
    stage.split_once('.')?.1.parse().ok()
}

/// Fails when a shuffle read in `plan` lists files of more than one attempt
/// of its stage: some of them are a restarted attempt's rows twice.
fn single_attempt_inputs(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut mixed = None;
    plan.apply(|node| {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let attempts: BTreeSet<u64> = reader
                .partition
                .iter()
                .flatten()
                .filter_map(|location| location.file_id.map(attempt_of))
                .collect();
            if attempts.len() > 1 {
                mixed = Some((reader.stage_id, attempts));
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match mixed {
        Some((stage, attempts)) => exec_err!(
            "{MIXED_ATTEMPTS} {stage} (attempts {attempts:?}): the stage was restarted after an \
             executor was lost, and files of its earlier attempt are still listed"
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballista_core::serde::scheduler::{
        ExecutorMetadata, ExecutorOperatingSystemSpecification, ExecutorSpecification, PartitionId,
        PartitionLocation, PartitionStats,
    };
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::Partitioning;

    fn location(partition: usize, attempt: Option<u32>, task: usize) -> PartitionLocation {
        PartitionLocation {
            map_partition_id: task,
            partition_id: PartitionId {
                job_id: JobId::new("job"),
                stage_id: 2,
                partition_id: partition,
            },
            executor_meta: ExecutorMetadata {
                id: "executor".into(),
                host: "127.0.0.1".into(),
                port: 1,
                grpc_port: 0,
                specification: ExecutorSpecification::default(),
                os_info: ExecutorOperatingSystemSpecification::default(),
            },
            partition_stats: PartitionStats::new(Some(10), Some(1), Some(100)),
            file_id: Some(file_id(attempt, task) as u64),
            is_sort_shuffle: false,
        }
    }

    fn reader(locations: Vec<Vec<PartitionLocation>>) -> Arc<dyn ExecutionPlan> {
        let partitions = locations.len();
        Arc::new(
            ShuffleReaderExec::try_new(
                2,
                locations,
                Arc::new(Schema::empty()),
                Partitioning::UnknownPartitioning(partitions),
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_stage_attempt_is_read_from_the_task_identity() {
        assert_eq!(stage_attempt("TID 038J02HCBY000/3.1/0.0"), Some(1));
        assert_eq!(stage_attempt("TID 038J02HCBY000/12.0/7.2"), Some(0));
        assert_eq!(stage_attempt("something else"), None);
        assert_eq!(stage_attempt("TID job/3/0.0"), None);
    }

    #[test]
    fn file_ids_of_two_attempts_differ_and_keep_the_attempt() {
        assert_ne!(file_id(Some(0), 0), file_id(Some(1), 0));
        assert_eq!(attempt_of(file_id(Some(7), 3) as u64), 7);
        assert_eq!(file_id(None, 3), 3);
        assert_eq!(attempt_of(file_id(Some(0), 3) as u64), 0);
    }

    #[test]
    fn input_of_one_attempt_passes_and_of_two_fails_by_name() {
        // A partial re-run under one attempt: task ids go on, one attempt.
        let one = reader(vec![
            vec![location(0, Some(1), 0), location(0, Some(1), 1)],
            vec![location(1, Some(1), 0), location(1, Some(1), 1)],
        ]);
        single_attempt_inputs(&one).unwrap();
        // The first attempt's task 0 finished, the stage restarted: its
        // file is still listed beside the second attempt's tasks 0 and 1.
        let mixed = reader(vec![
            vec![
                location(0, Some(0), 0),
                location(0, Some(1), 0),
                location(0, Some(1), 1),
            ],
            vec![location(1, Some(1), 0), location(1, Some(1), 1)],
        ]);
        let e = single_attempt_inputs(&mixed).unwrap_err();
        assert!(is_mixed_attempts(&e), "{e}");
        assert!(e.to_string().contains("stage 2"), "{e}");
    }
}
