//! Training-data tools: read and write the formats RL users bring (DeepScaleR JSON, JSONL, verl's
//! Parquet), remove duplicates, remove benchmark problems that leaked into a training set, drop
//! problems whose gold answer the math reward cannot check, and describe a data set.
//!
//! The pieces, one concept per file:
//! * [`formats`] / [`parquet`]: reading records (problem, answer, the rest of the record) and
//!   writing them back, with errors naming the file and record; [`atomic`]: the all-or-nothing
//!   write.
//! * [`normalise`]: the token stream every comparison starts from (case, whitespace, LaTeX
//!   spacing folded; numbers as single tokens so templated variants can be told apart).
//! * [`minhash`]: seeded MinHash signatures and LSH banding (deterministic, no `RandomState`).
//! * [`features`] and [`matching`]: per-record shingles and n-grams, and the classification of a
//!   pair as exact, near-duplicate or templated.
//! * [`dedup`], [`decontaminate`], [`filter`], [`stats`]: the four jobs of `scalerl data`.
//! * [`report`]: the JSONL report lines and the summary counts.
pub mod atomic;
pub mod decontaminate;
pub mod dedup;
pub mod features;
pub mod filter;
pub mod formats;
pub mod matching;
pub mod minhash;
pub mod normalise;
pub mod parquet;
pub mod report;
pub mod stats;

pub use formats::{read, write, DataFile, Fields, Item, OutputOptions, ParquetShape};
pub use report::{Action, Reason, ReportLine};
