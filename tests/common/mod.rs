//! Helpers shared by integration tests: fixture paths and reference files.
#![allow(dead_code)]
use std::path::PathBuf;

/// `tests/fixtures/NAME` of this checkout; $SCALERL_FIXTURES or ./tests/fixtures instead when the
/// test binary runs from a copied bundle (scripts/gpu-check.sh).
pub fn fixture(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("SCALERL_FIXTURES") {
        return PathBuf::from(d).join(name);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    if here.exists() {
        here
    } else {
        PathBuf::from("tests/fixtures").join(name)
    }
}

/// `reference.json` written by scripts/make_fixtures.py (transformers, f32, CPU).
pub struct Reference {
    pub prompts: Vec<Vec<u32>>,
    /// [prompt][position][vocab]
    pub logits: Vec<Vec<Vec<f32>>>,
    /// (prompt, max_new_tokens, expected greedy tokens)
    pub greedy: Vec<(Vec<u32>, usize, Vec<u32>)>,
}

pub fn reference(model: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(model).join("reference.json")).expect("reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
    };
    Reference {
        prompts: v["prompts"].as_array().unwrap().iter().map(ids).collect(),
        logits: serde_json::from_value(v["logits"].clone()).unwrap(),
        greedy: v["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (ids(&g["prompt"]), g["max_new_tokens"].as_u64().unwrap() as usize, ids(&g["tokens"])))
            .collect(),
    }
}

/// The largest of `xs`, NaN if any is NaN (`f32::max` drops a NaN and would report a row of NaN
/// logits as error 0).
pub fn nan_max(xs: impl IntoIterator<Item = f32>) -> f32 {
    xs.into_iter().fold(0f32, |m, x| if x.is_nan() || m.is_nan() { f32::NAN } else { m.max(x) })
}

/// max |a − b| / max |b| over two logit rows. Both rows must be finite (a non-finite value
/// panics here, naming its index), so a NaN or ∞ can never pass a tolerance check.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "rel_err: rows of different lengths");
    for (name, row) in [("compared", a), ("reference", b)] {
        if let Some(i) = row.iter().position(|v| !v.is_finite()) {
            panic!("rel_err: the {name} row holds {} at index {i}", row[i]);
        }
    }
    let scale = nan_max(b.iter().map(|v| v.abs()));
    assert!(scale > 0.0, "rel_err: the reference row is all zero");
    nan_max(a.iter().zip(b).map(|(x, y)| (x - y).abs())) / scale
}

/// Feeds every prompt token by token, all live sequences in one batch per step (shorter ones
/// drop out), with blocks of `block_size` handed out interleaved so that sequences cross
/// blocks and their blocks are not contiguous. Returns logits `[prompt][position][vocab]`.
pub fn stepwise_logits<O: scalerl::ops::Ops>(model: &scalerl::model::Transformer<O>, prompts: &[Vec<u32>], block_size: usize) -> Vec<Vec<Vec<f32>>> {
    use scalerl::kv::BlockAllocator;
    use scalerl::model::SeqChunk;
    let total_blocks: usize = prompts.iter().map(|p| p.len().div_ceil(block_size)).sum();
    let mut alloc = BlockAllocator::new(total_blocks, block_size);
    let mut cache = model.new_cache(total_blocks, block_size).unwrap();
    let mut tables = vec![Vec::new(); prompts.len()];
    let mut out = vec![Vec::new(); prompts.len()];
    let longest = prompts.iter().map(|p| p.len()).max().unwrap();
    for step in 0..longest {
        let live: Vec<usize> = (0..prompts.len()).filter(|&i| prompts[i].len() > step).collect();
        for &i in &live {
            alloc.ensure_capacity(&mut tables[i], step + 1).unwrap();
        }
        let chunks: Vec<SeqChunk> =
            live.iter().map(|&i| SeqChunk { tokens: &prompts[i][step..step + 1], start_pos: step, table: &tables[i] }).collect();
        // One token per chunk: the last-token logits are every row.
        let logits = model.last_token_logits(&mut cache, &chunks).unwrap();
        let v = model.config.vocab_size;
        for (a, &i) in live.iter().enumerate() {
            out[i].push(logits[a * v..(a + 1) * v].to_vec());
        }
    }
    out
}
