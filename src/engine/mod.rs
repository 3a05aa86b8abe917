//! The generation engine: requests and their sampling parameters, batched generation with
//! continuous batching under a KV budget (`generate.rs`, `admission.rs`), and the model it runs
//! on any backend (`runner.rs`: the `StepModel` seam and the `Runtime`). It never touches the
//! CPU ops: the numerics are the backend's.
mod admission;
pub mod generate;
pub mod runner;
pub mod sampler;

pub use generate::{generate, Completion, FinishReason, GenerateOptions, Request};
pub use runner::{Backend, Runtime, RuntimeCache, StepModel};
pub use sampler::SamplingParams;
