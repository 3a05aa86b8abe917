//! What a problem is compared by, computed once per record from its [`super::normalise::tokens`]:
//! * `key`: the normalised text, for exact matches;
//! * `shingles`: hashes of its `ngram`-token windows, the set MinHash and Jaccard work on
//!   (sentence punctuation left out);
//! * `masked`: the same with every number replaced by one placeholder, so two templated variants
//!   (same text, other numbers) have equal masked sets;
//! * `numbers`: its numbers in order (to tell a template from a copy), `words`: the multiset of
//!   its other tokens (a template keeps them);
//! * `grams`: hashes of its long (`overlap_ngram`-token) windows, for the overlap rule.

use super::minhash::{hash_str, ngram_set};
use super::normalise::{exact_key, is_number, tokens};
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub key: String,
    pub shingles: Vec<u64>,
    pub masked: Vec<u64>,
    pub numbers: Vec<String>,
    /// Its other tokens (words, commands, symbols), sorted: a multiset.
    pub words: Vec<u64>,
    /// Empty unless long n-grams were asked for.
    pub grams: Vec<u64>,
}

/// The placeholder every number becomes in `masked`.
const NUMBER: &str = "<num>";

fn is_punctuation(t: &str) -> bool {
    matches!(t, "." | "," | ";" | ":" | "?" | "!" | "'" | "\"" | "`")
}

/// The features of one problem. `overlap_ngram` 0: no long n-grams.
pub fn features(problem: &str, ngram: usize, overlap_ngram: usize) -> Features {
    let all = tokens(problem);
    // Sentence punctuation is left out of every set: an added comma would otherwise change
    // `ngram` shingles of a short problem and push a copy below the threshold.
    let toks: Vec<&String> = all.iter().filter(|t| !is_punctuation(t)).collect();
    let hashes: Vec<u64> = toks.iter().map(|t| hash_str(t)).collect();
    let number = hash_str(NUMBER);
    let masked_hashes: Vec<u64> =
        toks.iter().zip(&hashes).map(|(t, &h)| if is_number(t) { number } else { h }).collect();
    // A problem shorter than a long n-gram has none: the overlap rule is about long shared
    // passages, and a short problem is covered by the exact and near-duplicate rules.
    let grams = if overlap_ngram > 0 && toks.len() >= overlap_ngram { ngram_set(&hashes, overlap_ngram) } else { Vec::new() };
    Features {
        key: exact_key(&all),
        shingles: ngram_set(&hashes, ngram),
        masked: ngram_set(&masked_hashes, ngram),
        numbers: toks.iter().filter(|t| is_number(t)).map(|t| t.to_string()).collect(),
        words: {
            let mut w: Vec<u64> = toks.iter().zip(&hashes).filter(|(t, _)| !is_number(t)).map(|(_, &h)| h).collect();
            w.sort_unstable();
            w
        },
        grams,
    }
}

/// The features of many problems, in parallel, in input order.
pub fn all_features(problems: &[&str], ngram: usize, overlap_ngram: usize) -> Vec<Features> {
    problems.par_iter().map(|p| features(p, ngram, overlap_ngram)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templated_variants_share_masked_shingles_only() {
        let a = features("A train travels 60 miles in 2 hours. What is its average speed?", 5, 13);
        let b = features("A train travels 90 miles in 3 hours. What is its average speed?", 5, 13);
        assert_ne!(a.key, b.key);
        assert_eq!(a.masked, b.masked);
        assert_ne!(a.shingles, b.shingles);
        assert_eq!(a.numbers, ["60", "2"]);
        assert!(!a.grams.is_empty());
        assert!(features("Compute 2+2.", 5, 13).grams.is_empty(), "shorter than 13 tokens");
    }
}
