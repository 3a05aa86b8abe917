//! Tokenizers and chat templates: the fixture tokenizer, and the real artefacts that
//! scripts/fetch-artifacts.sh caches (the Qwen2 BPE with llama.cpp's test vectors, and the
//! DeepSeek-R1-Distill tokenizer and chat template from its GGUF).
mod common;
use common::fixture;
use scalerl::model::chat::{R1_ASSISTANT, R1_BOS, R1_USER};
use scalerl::model::{ChatTemplate, TextTokenizer};
use std::path::PathBuf;

/// Directory of a fetched artefact, or None (with a "skipped" line) when it is not cached.
/// With SCALERL_REQUIRE_ARTIFACTS=1 (CI) a missing artefact fails the test instead.
fn artifact(name: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("SCALERL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/scalerl"));
    let dir = cache.join(name);
    if dir.join("tokenizer.json").exists() {
        return Some(dir);
    }
    if std::env::var("SCALERL_REQUIRE_ARTIFACTS").as_deref() == Ok("1") {
        panic!("{} is missing: run scripts/fetch-artifacts.sh", dir.display());
    }
    println!("skipped: {} not fetched (run scripts/fetch-artifacts.sh)", dir.display());
    None
}

#[test]
fn model_chat_template_renders_one_bos() {
    let tok = TextTokenizer::load(&fixture("tiny-qwen2")).unwrap();
    let text = ChatTemplate::Model.render_user_turn(&tok, "What is 2+2?").unwrap();
    assert_eq!(text, format!("{R1_BOS}{R1_USER}What is 2+2?{R1_ASSISTANT}"));
    let ids = ChatTemplate::Model.encode_user_turn(&tok, "What is 2+2?").unwrap();
    let bos = tok.token_to_id(R1_BOS).unwrap();
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&t| t == bos).count(), 1, "double BOS: {ids:?}");
    assert_eq!(*ids.last().unwrap(), tok.token_to_id(R1_ASSISTANT).unwrap());
}

#[test]
fn builtin_r1_templates_with_and_without_think() {
    let tok = TextTokenizer::load(&fixture("tiny-qwen2")).unwrap();
    let plain = ChatTemplate::R1Distill.render_user_turn(&tok, "hi").unwrap();
    assert_eq!(plain, ChatTemplate::Model.render_user_turn(&tok, "hi").unwrap());
    let think = ChatTemplate::R1DistillThink.encode_user_turn(&tok, "hi").unwrap();
    let think_id = tok.token_to_id("<think>").unwrap();
    assert_eq!(&think[think.len() - 2..think.len() - 1], &[think_id]);
    assert_eq!(tok.decode(&think[think.len() - 1..], false).unwrap(), "\n");
    assert_eq!("r1-distill-think".parse::<ChatTemplate>().unwrap(), ChatTemplate::R1DistillThink);
    assert!("chatml".parse::<ChatTemplate>().is_err());
}

#[test]
fn model_without_template_is_a_clear_error() {
    let mut tok = TextTokenizer::load(&fixture("tiny-llama")).unwrap();
    tok.chat_template = None;
    let err = ChatTemplate::Model.render_user_turn(&tok, "x").unwrap_err().to_string();
    assert!(err.contains("chat_template"), "{err}");
}

#[test]
fn fixture_tokenizer_round_trips() {
    let tok = TextTokenizer::load(&fixture("tokenizer")).unwrap();
    for text in ["The answer is \\boxed{42}.", "héllo wörld ∑ 你好", "  spaces\tand\nnewlines "] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn real_qwen2_tokenizer_matches_llama_cpp_vectors() {
    let Some(dir) = artifact("qwen2-tokenizer") else { return };
    let tok = TextTokenizer::load(&dir).unwrap();
    let inp = std::fs::read_to_string(fixture("qwen2-vocab/ggml-vocab-qwen2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(fixture("qwen2-vocab/ggml-vocab-qwen2.gguf.out")).unwrap();
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(inputs.pop(), Some(""), "the .inp file ends with a separator");
    let expected: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(inputs.len(), 46);
    assert_eq!(inputs.len(), expected.len());
    for (text, want) in inputs.iter().zip(&expected) {
        assert_eq!(&tok.encode(text, false).unwrap(), want, "input {text:?}");
    }
}

#[test]
fn real_r1_distill_special_tokens_and_template() {
    let Some(dir) = artifact("r1-distill-tokenizer") else { return };
    let tok = TextTokenizer::load(&dir).unwrap();
    for (text, id) in [
        ("<｜end▁of▁sentence｜>", 151643),
        ("<｜User｜>", 151644),
        ("<｜Assistant｜>", 151645),
        ("<｜begin▁of▁sentence｜>", 151646),
        ("<think>", 151648),
        ("</think>", 151649),
    ] {
        assert_eq!(tok.token_to_id(text), Some(id), "{text}");
        assert_eq!(tok.encode(text, false).unwrap(), vec![id], "{text} must encode as one token");
    }
    // The template shipped with the model renders exactly like the built-in one, one BOS.
    let prompt = "Let x = 3. What is x^2?";
    let model = ChatTemplate::Model.encode_user_turn(&tok, prompt).unwrap();
    let builtin = ChatTemplate::R1Distill.encode_user_turn(&tok, prompt).unwrap();
    assert_eq!(model, builtin);
    assert_eq!(model.iter().filter(|&&t| t == 151646).count(), 1);
    assert_eq!(model[0], 151646);
    let think = ChatTemplate::R1DistillThink.encode_user_turn(&tok, prompt).unwrap();
    assert_eq!(&think[..model.len()], &model[..]);
    assert_eq!(think[model.len()], 151648);
}
