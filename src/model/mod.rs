//! Models from Hugging Face files — config, weights, tokenizer, chat template — and the one
//! transformer that runs them on any backend (`transformer.rs`, over `crate::ops`).
pub mod chat;
pub mod config;
pub mod generation_config;
pub mod safetensors_files;
pub mod tokenizer;
pub mod transformer;

pub use chat::ChatTemplate;
pub use config::{Architecture, ModelConfig};
pub use generation_config::GenerationConfig;
pub use tokenizer::TextTokenizer;
pub use transformer::{CudaModel, ForwardBufs, Model, PackedForward, Save, SeqChunk, Transformer};
