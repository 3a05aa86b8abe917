//! The generation engine: requests and their sampling parameters (`sampler.rs`), batched
//! generation (`generate.rs`) under a scheduler with on-demand KV blocks, preemption by
//! recompute, chunked prefill and shared prompt blocks (`scheduler.rs`), and the model it runs on
//! any backend (`runner.rs`: the `StepModel` seam and the `Runtime`). It never touches the CPU
//! ops: the numerics are the backend's.
pub mod generate;
pub mod runner;
pub mod sampler;
pub mod scheduler;

pub use generate::{generate, generate_with_stats, Completion, FinishReason, GenerateOptions, Request, SchedulerStats};
pub use runner::{Backend, Runtime, RuntimeCache, StepModel};
pub use sampler::SamplingParams;
