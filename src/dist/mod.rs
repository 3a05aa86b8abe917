//! Data-parallel training across processes, one per GPU (SPMD): who this process is
//! (`launch`: torchrun, srun or mpirun's environment), how the ranks find each other before NCCL
//! can (`rendezvous`: rank 0's unique id over TCP), and the collectives the step needs
//! (`collective`: all-reduce and broadcast, with `ThreadGroup`, an in-process implementation
//! with NCCL's semantics for tests and interpret mode).
//!
//! Status: these three parts are in and tested; the NCCL backend (cudarc's `nccl` feature,
//! loaded at run time) and the trainer's use of a group (each rank rolls out its share of the
//! prompt groups, the loss normalised by the global token count, rank 0 writes) are not wired
//! yet: `scalerl train` under a launcher with WORLD_SIZE > 1 refuses to start rather than run N
//! unsynchronised copies.

pub mod collective;
pub mod launch;
pub mod rendezvous;

pub use collective::{all_gather_f64, Collective, SingleRank, ThreadGroup};
pub use launch::{Launcher, Topology};
