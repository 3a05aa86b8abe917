//! The paged KV cache: block manager (which blocks a sequence owns) and storage.
pub mod blocks;
pub mod cache;

pub use blocks::BlockAllocator;
pub use cache::KvCache;
