//! The paged KV cache's block bookkeeping: which blocks a sequence owns (block tables,
//! reference counts). The storage itself belongs to each backend (`ops::cpu::KvCache`,
//! `ops::cuda::DeviceKvCache`), which lay blocks out the same way.
pub mod blocks;

pub use blocks::BlockAllocator;
