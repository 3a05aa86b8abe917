//! scalerl: GRPO training of reasoning language models (the DeepScaleR recipe) in Rust, with a
//! paged-KV inference engine for fast long-context sampling.
//!
//! Map: `model` (Hugging Face files → config, weights, tokenizer, chat template, forward),
//! `backend` (the CPU reference ops), `kv` (paged KV cache), `engine` (sampling and generation),
//! `data` (training-data tools: formats, dedup, decontamination, gradability filter, stats),
//! `cli` (the `scalerl` binary's subcommands).
pub mod backend;
pub mod cli;
pub mod data;
pub mod device;
pub mod engine;
pub mod eval;
pub mod kv;
pub mod model;
pub mod reward;
pub mod train;
