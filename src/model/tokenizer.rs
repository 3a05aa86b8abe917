//! `tokenizer.json` (through the `tokenizers` crate) plus the special tokens and chat template
//! of `tokenizer_config.json`.

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::Path;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The Jinja chat template of tokenizer_config.json, if it has one.
    pub chat_template: Option<String>,
}

/// Special tokens are written either as a string or as an AddedToken object with `content`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` of which "default" is the one.
fn chat_template(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let named = |n: &str| items.iter().find(|i| i.get("name").and_then(|x| x.as_str()) == Some(n));
            named("default")
                .or(items.first())
                .and_then(|i| i.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        }
        _ => None,
    }
}

impl TextTokenizer {
    /// Reads `dir/tokenizer.json` and, if present, `dir/tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            anyhow::bail!("no tokenizer in {}: tokenizer.json is missing", dir.display());
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", cfg_path.display()))?
        } else {
            Value::Null
        };
        Ok(TextTokenizer {
            inner,
            bos_token: token_string(cfg.get("bos_token")),
            eos_token: token_string(cfg.get("eos_token")),
            chat_template: chat_template(cfg.get("chat_template")),
        })
    }

    /// Token ids of `text`. `add_special_tokens` runs the tokenizer's post-processor (which may
    /// prepend BOS); text rendered by a chat template already has its specials, so pass false.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| anyhow!("tokenizer failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| anyhow!("tokenizer failed to decode: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
