//! The physical extension codec of forkline's plans: forkline's own operators
//! (see [`super::wire`]), and Ballista's codec for everything else.
//!
//! Functions cross by name and resolve against the receiving side's registry
//! (the session state of `functions`). DataFusion's composed codec is not used: it
//! breaks by-name UDF round-trips (apache/datafusion#24830).

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use super::wire;
use crate::query::aggregates::ordered_first_last;

/// forkline's operators first, then Ballista's.
#[derive(Debug, Default)]
pub struct ForklineCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl ForklineCodec {
    /// The codec, shared as Ballista's session settings want it.
    pub fn shared() -> Arc<dyn PhysicalExtensionCodec> {
        Arc::new(Self::default())
    }
}

impl PhysicalExtensionCodec for ForklineCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match wire::ours(buf) {
            Some(body) => wire::decode(body, inputs, ctx, self, converter),
            None => self.ballista.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if wire::encode(&node, buf, self, converter)? {
            return Ok(());
        }
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if buf == ordered_first_last::PRE_ORDERED_TAG
            && let Some(udaf) = ordered_first_last::pre_ordered(name)
        {
            return Ok(Arc::new(udaf));
        }
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        // The registry that decodes a name knows the function, not that the
        // planner found its input pre-ordered.
        if ordered_first_last::is_pre_ordered(node) {
            buf.extend_from_slice(ordered_first_last::PRE_ORDERED_TAG);
            return Ok(());
        }
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}
