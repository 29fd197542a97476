//! Scale-out on an Apache DataFusion Ballista cluster.
//!
//! forkline plans every query itself (its table functions resolve lineage
//! from its catalog snapshot, its optimizer rules stay in force) and submits
//! the finished physical plan to a Ballista scheduler, which splits it into
//! stages for its executors. Ballista serializes the plans it knows; forkline's
//! own operators cross processes through [`codec::ForklineCodec`], and the
//! functions they name resolve against [`functions::state`] on the scheduler
//! and every executor.

pub mod codec;
pub mod functions;
pub mod standalone;
pub mod submit;
mod wire;
