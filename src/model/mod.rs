//! Models from Hugging Face files: config, weights, tokenizer, chat template, and the forward pass.
pub mod chat;
pub mod config;
pub mod forward;
pub mod generation_config;
pub mod safetensors_files;
pub mod tokenizer;
pub mod weights;

pub use chat::ChatTemplate;
pub use config::{Architecture, ModelConfig};
pub use forward::{Model, SeqChunk};
pub use generation_config::GenerationConfig;
pub use tokenizer::TextTokenizer;
