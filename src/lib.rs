//! scalerl: GRPO training of reasoning language models (the DeepScaleR recipe) in Rust, with a
//! paged-KV inference engine for fast long-context sampling.
//!
//! Map, lower layers first (a module imports only those above it in this list):
//! - `util` — the seeded RNG;
//! - `device` — memory, copies, kernel launch by name, GEMM, CUDA graphs: a GPU (cudarc) or
//!   interpret mode (the kernels run on the CPU with CUDA semantics);
//! - `dist` — data-parallel ranks: launcher environment, TCP rendezvous, collectives (NCCL
//!   through the device layer's `device::nccl`, or in-process for tests);
//! - `params` — the tensor table (names, shapes, roles) and flat parameter buffers;
//! - `ops` — the numerics, forward and backward: `cpu` (the f32 reference) and `cuda` (the
//!   kernels, on the device layer), behind one `Ops` interface;
//! - `model` — Hugging Face files (config, safetensors, tokenizer, chat template) and the one
//!   transformer, generic over the ops;
//! - `kv` — the paged KV cache's block bookkeeping;
//! - `engine` — generation (continuous batching, sampling parameters) and the `Runtime` that
//!   runs a model on the chosen backend;
//! - `reward` — the math verifier; `eval` — benchmark evaluation; `train` — the GRPO trainer;
//!   `data` — training-data tools (formats, dedup, decontamination, gradability filter, stats);
//! - `cli` — the `scalerl` binary's subcommands.
pub mod cli;
pub mod data;
pub mod device;
pub mod dist;
pub mod engine;
pub mod eval;
pub mod kv;
pub mod model;
pub mod ops;
pub mod params;
pub mod reward;
pub mod train;
pub mod util;
