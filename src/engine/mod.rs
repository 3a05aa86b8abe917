//! The generation API: sampling parameters, requests, completions.
mod admission;
pub mod generate;
pub mod sampler;

pub use generate::{generate, Completion, FinishReason, GenerateOptions, Request, StepModel};
pub use sampler::{Rng, SamplingParams};
