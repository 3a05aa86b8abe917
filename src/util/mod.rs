//! Small shared pieces with no home of their own.
pub mod alloc;
pub mod rng;

pub use rng::{hash_parts, mix, Rng};
