//! Training-data tools: read and write the formats RL users bring (DeepScaleR JSON, JSONL, verl's
//! Parquet).
//!
//! * [`formats`] / [`parquet`]: reading records (problem, answer, the rest of the record) and
//!   writing them back, with errors naming the file and record; [`atomic`]: the all-or-nothing
//!   write.
pub mod atomic;
pub mod formats;
pub mod parquet;

pub use formats::{read, write, DataFile, Fields, Item, OutputOptions, ParquetShape};
