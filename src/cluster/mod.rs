//! Scale-out on an Apache DataFusion Ballista cluster.
//!
//! forkline plans every query itself (its table functions resolve lineage
//! from its catalog snapshot, its optimizer rules stay in force) and submits
//! the finished physical plan to a Ballista scheduler ([`remote::Remote`]),
//! which splits it into stages for its executors. Ballista serializes the
//! plans it knows; forkline's own operators cross processes through
//! [`codec::ForklineCodec`], and the functions they name resolve against
//! [`functions::state`] on the scheduler and every executor.
//! [`scheduler`] and [`executor`] are the `forkline scheduler` and
//! `forkline executor` processes; [`standalone`] starts a cluster inside
//! this process (tests, trials on one machine).

mod attempts;
pub mod codec;
pub mod executor;
pub mod functions;
pub mod remote;
pub mod scheduler;
pub mod standalone;
mod wire;
