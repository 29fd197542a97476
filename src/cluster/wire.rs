//! The wire form of forkline's own operators.
//!
//! A node body starts with [`MAGIC`]; its first byte, `F` (0x46), would be
//! field 8 with wire type 6 in protobuf, which does not exist, so no node
//! Ballista's codec writes starts with it and the two never mistake each
//! other's bytes.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::catalog::Segment;
use crate::query::aggregates::run::RunAggregateExec;
use crate::query::aggregates::sorted::SortedAggregateExec;
use crate::query::lineage::stitch::{StitchExec, Views};

const MAGIC: &[u8] = b"FKL1";

#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Stitch(StitchNode),
    #[prost(message, tag = "2")]
    RunAggregate(Box<RunAggregateNode>),
    #[prost(message, tag = "3")]
    SortedAggregate(Box<SortedAggregateNode>),
}

#[derive(Clone, PartialEq, Message)]
struct StitchNode {
    #[prost(message, repeated, tag = "1")]
    views: Vec<ViewNode>,
    #[prost(string, optional, tag = "2")]
    metric: Option<String>,
    #[prost(message, optional, tag = "3")]
    schema: Option<protobuf::Schema>,
    #[prost(uint32, repeated, tag = "4")]
    outputs: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct ViewNode {
    #[prost(uint64, tag = "1")]
    viewer: u64,
    #[prost(message, repeated, tag = "2")]
    segments: Vec<SegmentNode>,
}

#[derive(Clone, PartialEq, Message)]
struct SegmentNode {
    #[prost(uint64, tag = "1")]
    owner: u64,
    #[prost(uint64, tag = "2")]
    depth: u64,
    #[prost(uint64, tag = "3")]
    from_step: u64,
    #[prost(uint64, optional, tag = "4")]
    to_step: Option<u64>,
}

/// The partial aggregate travels with an empty stand-in for its input, which
/// crosses as the extension node's own child.
#[derive(Clone, PartialEq, Message)]
struct RunAggregateNode {
    #[prost(uint64, tag = "1")]
    min_mean_run: u64,
    #[prost(message, optional, tag = "2")]
    aggregate: Option<protobuf::PhysicalPlanNode>,
}

/// As [`RunAggregateNode`]: the aggregate over an empty stand-in.
#[derive(Clone, PartialEq, Message)]
struct SortedAggregateNode {
    #[prost(message, optional, tag = "1")]
    aggregate: Option<protobuf::PhysicalPlanNode>,
}

/// Writes `node` to `buf` if it is one of forkline's operators; `false` when
/// it is not (then someone else's codec must).
pub fn encode(
    node: &Arc<dyn ExecutionPlan>,
    buf: &mut Vec<u8>,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<bool> {
    let kind = if let Some(stitch) = node.downcast_ref::<StitchExec>() {
        Kind::Stitch(stitch_node(stitch, node)?)
    } else if let Some(run) = node.downcast_ref::<RunAggregateExec>() {
        Kind::RunAggregate(Box::new(RunAggregateNode {
            min_mean_run: run.min_mean_run() as u64,
            aggregate: Some(aggregate_proto(run.aggregate(), codec, converter)?),
        }))
    } else if let Some(sorted) = node.downcast_ref::<SortedAggregateExec>() {
        Kind::SortedAggregate(Box::new(SortedAggregateNode {
            aggregate: Some(aggregate_proto(sorted.aggregate(), codec, converter)?),
        }))
    } else {
        return Ok(false);
    };
    buf.extend_from_slice(MAGIC);
    Node { kind: Some(kind) }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("encoding a forkline operator: {e}")))?;
    Ok(true)
}

/// `agg` over an empty stand-in for its input, which crosses as the
/// extension node's own child.
fn aggregate_proto(
    agg: &Arc<AggregateExec>,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<protobuf::PhysicalPlanNode> {
    let plan: Arc<dyn ExecutionPlan> = agg.clone();
    let stand_in: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(agg.input().schema()));
    let plan = plan.replace_children(vec![stand_in], recompute())?;
    converter.execution_plan_to_proto(&plan, codec)
}

/// The aggregate `proto` (see [`aggregate_proto`]) over `input`.
fn aggregate_over(
    proto: Option<&protobuf::PhysicalPlanNode>,
    input: &Arc<dyn ExecutionPlan>,
    ctx: &TaskContext,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<(Arc<dyn ExecutionPlan>, Arc<AggregateExec>)> {
    let proto = proto.ok_or_else(|| {
        DataFusionError::Internal("an aggregate node without its aggregate".into())
    })?;
    let plan = converter
        .proto_to_execution_plan(proto, &PhysicalPlanDecodeContext::new(ctx, codec))?
        .replace_children(vec![input.clone()], recompute())?;
    let Some(agg) = plan.downcast_ref::<AggregateExec>() else {
        return Err(DataFusionError::Internal(format!(
            "an aggregate node carries {}, not an aggregate",
            plan.name()
        )));
    };
    let agg = Arc::new(agg.clone());
    Ok((plan, agg))
}

fn stitch_node(stitch: &StitchExec, node: &Arc<dyn ExecutionPlan>) -> Result<StitchNode> {
    let views = stitch
        .views()
        .viewers()
        .iter()
        .map(|(viewer, segments)| ViewNode {
            viewer: *viewer,
            segments: segments
                .iter()
                .map(|s| SegmentNode {
                    owner: s.owner,
                    depth: s.depth as u64,
                    from_step: s.from_step,
                    to_step: s.to_step,
                })
                .collect(),
        })
        .collect();
    Ok(StitchNode {
        views,
        metric: stitch.metric().map(str::to_string),
        schema: Some(protobuf::Schema::try_from(node.schema().as_ref())?),
        outputs: stitch
            .output_positions()
            .into_iter()
            .map(|p| p as u32)
            .collect(),
    })
}

/// Children swapped for others of the same schema: properties are recomputed.
fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// The body of one of forkline's nodes, if `buf` is one.
pub fn ours(buf: &[u8]) -> Option<&[u8]> {
    buf.strip_prefix(MAGIC)
}

/// Rebuilds the operator `body` (see [`ours`]) describes over `inputs`.
pub fn decode(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let node = Node::decode(body)
        .map_err(|e| DataFusionError::Internal(format!("decoding a forkline operator: {e}")))?;
    let [input] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "a forkline operator takes one input, got {}",
            inputs.len()
        )));
    };
    match node.kind {
        Some(Kind::Stitch(stitch)) => {
            let schema = stitch
                .schema
                .as_ref()
                .ok_or_else(|| DataFusionError::Internal("StitchExec without a schema".into()))?;
            let pairs: Vec<_> = stitch
                .views
                .iter()
                .flat_map(|v| {
                    v.segments.iter().map(|s| {
                        let segment = Segment {
                            owner: s.owner,
                            depth: s.depth as usize,
                            from_step: s.from_step,
                            to_step: s.to_step,
                        };
                        (v.viewer, segment)
                    })
                })
                .collect();
            let positions: Vec<usize> = stitch.outputs.iter().map(|&p| p as usize).collect();
            Ok(Arc::new(StitchExec::from_parts(
                input.clone(),
                Views::new(&pairs),
                stitch.metric,
                Arc::new(Schema::try_from(schema)?),
                &positions,
            )?))
        }
        Some(Kind::RunAggregate(run)) => {
            let (plan, agg) = aggregate_over(run.aggregate.as_ref(), input, ctx, codec, converter)?;
            let min_mean_run = usize::try_from(run.min_mean_run).unwrap_or(usize::MAX);
            // Types the executor's plan no longer fits keep DataFusion's operator.
            Ok(
                match RunAggregateExec::try_from_aggregate(agg, min_mean_run) {
                    Some(run) => Arc::new(run) as Arc<dyn ExecutionPlan>,
                    None => plan,
                },
            )
        }
        Some(Kind::SortedAggregate(sorted)) => {
            let (plan, agg) =
                aggregate_over(sorted.aggregate.as_ref(), input, ctx, codec, converter)?;
            // An input whose order the executor cannot prove keeps DataFusion's operator.
            Ok(match SortedAggregateExec::try_from_aggregate(agg) {
                Some(sorted) => Arc::new(sorted) as Arc<dyn ExecutionPlan>,
                None => plan,
            })
        }
        None => Err(DataFusionError::Internal(
            "a forkline operator of an unknown kind: is this executor older than the client?"
                .into(),
        )),
    }
}
