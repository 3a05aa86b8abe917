//! Prompts for one user turn: the model's own Jinja chat template (rendered with minijinja and
//! Python-compatible string methods), or the built-in DeepSeek-R1-Distill template.
//!
//! DeepSeek changed the R1 template in Feb 2025 to end the generation prompt with `<think>\n`
//! (forcing the model to think); both forms are selectable.

use super::tokenizer::TextTokenizer;
use anyhow::{anyhow, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `chat_template` from the model's tokenizer_config.json.
    Model,
    /// `<｜begin▁of▁sentence｜><｜User｜>{prompt}<｜Assistant｜>` — the original R1-Distill form.
    R1Distill,
    /// The same followed by `<think>\n` (the template DeepSeek shipped from Feb 2025).
    R1DistillThink,
}

impl std::str::FromStr for ChatTemplate {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "model" => Ok(ChatTemplate::Model),
            "r1-distill" => Ok(ChatTemplate::R1Distill),
            "r1-distill-think" => Ok(ChatTemplate::R1DistillThink),
            other => Err(anyhow!("unknown chat template `{other}` (expected model, r1-distill or r1-distill-think)")),
        }
    }
}

impl std::fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChatTemplate::Model => "model",
            ChatTemplate::R1Distill => "r1-distill",
            ChatTemplate::R1DistillThink => "r1-distill-think",
        })
    }
}

pub const R1_BOS: &str = "<｜begin▁of▁sentence｜>";
pub const R1_USER: &str = "<｜User｜>";
pub const R1_ASSISTANT: &str = "<｜Assistant｜>";

impl ChatTemplate {
    /// The text of a conversation holding one user message, ready for generation.
    pub fn render_user_turn(&self, tok: &TextTokenizer, user: &str) -> Result<String> {
        match self {
            ChatTemplate::R1Distill => Ok(format!("{R1_BOS}{R1_USER}{user}{R1_ASSISTANT}")),
            ChatTemplate::R1DistillThink => Ok(format!("{R1_BOS}{R1_USER}{user}{R1_ASSISTANT}<think>\n")),
            ChatTemplate::Model => {
                let source = tok
                    .chat_template
                    .as_deref()
                    .context("the model has no chat_template in tokenizer_config.json (choose a built-in template)")?;
                render_jinja(source, tok, user)
            }
        }
    }

    /// Token ids of the rendered turn. The template writes BOS itself, so the tokenizer's
    /// post-processor is not run (that would give a double BOS).
    pub fn encode_user_turn(&self, tok: &TextTokenizer, user: &str) -> Result<Vec<u32>> {
        tok.encode(&self.render_user_turn(tok, user)?, false)
    }
}

fn render_jinja(source: &str, tok: &TextTokenizer, user: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", source).map_err(|e| anyhow!("invalid chat template: {e}"))?;
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => tok.bos_token.clone().unwrap_or_default(),
        eos_token => tok.eos_token.clone().unwrap_or_default(),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| anyhow!("rendering the chat template failed: {e}"))
}
