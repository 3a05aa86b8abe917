//! Data-parallel training across processes, one per GPU (SPMD): who this process is
//! (`launch`: torchrun, srun or mpirun's environment), how the ranks find each other before NCCL
//! can (`rendezvous`: rank 0's unique id over TCP; `heartbeat`: those connections kept open to
//! name a rank that dies), and the collectives the step needs
//! (`collective`: all-reduce and broadcast, with `ThreadGroup`, an in-process implementation
//! with NCCL's semantics for tests and interpret mode).
//!
//! `nccl` is the group of a multi-process GPU run (`scalerl train` under a launcher); the
//! data-parallel step itself is `train::data_parallel`.

pub mod collective;
pub mod heartbeat;
pub mod launch;
pub mod nccl;
pub mod rendezvous;

pub use collective::{all_gather_f64, Collective, SingleRank, ThreadGroup};
pub use launch::{Launcher, Topology};
