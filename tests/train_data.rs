//! The training set: DeepScaleR JSON and JSONL, answers as strings/numbers/lists, bad records
//! skipped and counted, errors naming file and record, a seeded per-epoch order, a cursor that
//! resumes exactly, and batches that cross epoch boundaries.
use scalerl::reward::Gold;
use scalerl::train::data::{epoch_order, Cursor, Dataset, SkipCounts};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fx(name: &str) -> PathBuf {
    Path::new("tests/fixtures/train").join(name)
}

#[test]
fn json_records_are_parsed_and_bad_ones_counted() {
    let ds = Dataset::load(&[fx("small.json")], 1, false).unwrap();
    let got: Vec<(&str, &Gold)> = ds.records().iter().map(|r| (r.problem.as_str(), &r.gold)).collect();
    assert_eq!(
        got,
        [
            ("What is $1+1$?", &Gold::One("2".into())),
            ("Compute $2 \\cdot 71$.", &Gold::One("142.0".into())),
            ("Name a root of $x^2=4$.", &Gold::Any(vec!["2".into(), "-2".into()])),
            ("What is $3^2$?", &Gold::One("9".into())),
            ("What is $10/2$?", &Gold::One("5".into())),
        ]
    );
    assert_eq!(ds.skipped, SkipCounts { no_problem: 2, no_answer: 3, filtered: 0 });
    assert_eq!(ds.records().iter().map(|r| r.id).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
}

#[test]
fn jsonl_and_concatenation() {
    let ds = Dataset::load(&[fx("small.json"), fx("small.jsonl")], 1, false).unwrap();
    assert_eq!(ds.len(), 8);
    assert_eq!(ds.records()[5].problem, "P-a");
    assert_eq!(ds.records()[7].gold, Gold::Any(vec!["3".into(), "three".into()]));
    assert_eq!(ds.skipped.total(), 6);
}

#[test]
fn errors_name_the_file_and_the_record() {
    let e = format!("{:#}", Dataset::load(&[fx("bad_line.jsonl")], 1, true).unwrap_err());
    assert!(e.contains("bad_line.jsonl") && e.contains("line 2"), "{e}");
    let e = format!("{:#}", Dataset::load(&[fx("bad_record.json")], 1, true).unwrap_err());
    assert!(e.contains("bad_record.json") && e.contains("record 1"), "{e}");
    let e = format!("{:#}", Dataset::load(&[fx("missing.json")], 1, true).unwrap_err());
    assert!(e.contains("missing.json"), "{e}");
}

fn synthetic(n: usize, seed: u64) -> Dataset {
    let recs = (0..n).map(|i| (format!("p{i}"), Gold::One(i.to_string()))).collect();
    Dataset::from_records(recs, SkipCounts::default(), seed, true).unwrap()
}

const PINNED: [usize; 8] = [4, 0, 3, 7, 5, 2, 6, 1];

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(100, 7, 0, true);
    assert_eq!(a.iter().copied().collect::<BTreeSet<_>>().len(), 100);
    assert_eq!(a, epoch_order(100, 7, 0, true), "deterministic");
    assert_ne!(a, (0..100).collect::<Vec<_>>(), "shuffled");
    assert_ne!(a, epoch_order(100, 7, 1, true), "differs by epoch");
    assert_ne!(a, epoch_order(100, 8, 0, true), "differs by seed");
    assert_eq!(epoch_order(5, 7, 3, false), [0, 1, 2, 3, 4]);
    // Pinned so a change of the generator (which would break resuming old runs) is noticed.
    assert_eq!(epoch_order(8, 42, 0, true), PINNED);
}

#[test]
fn batches_cross_epochs_and_each_epoch_visits_every_record_once() {
    let mut ds = synthetic(10, 3);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.extend(ds.next_batch(4).into_iter().map(|r| r.id));
    }
    // 20 records = exactly 2 epochs; the batch of steps 2 and 4 crossed a boundary.
    assert_eq!(ds.cursor(), Cursor { epoch: 2, index: 0 });
    for e in 0..2u64 {
        let ep = &seen[e as usize * 10..(e as usize + 1) * 10];
        assert_eq!(ep, epoch_order(10, 3, e, true).as_slice());
    }
    assert_ne!(seen[..10], seen[10..]);
    assert_eq!(ds.steps_per_epoch(4), 3);
}

#[test]
fn a_restored_cursor_continues_exactly() {
    let mut a = synthetic(13, 9);
    a.next_batch(5);
    a.next_batch(5);
    a.next_batch(5); // into epoch 1
    let saved = a.cursor();
    assert_eq!(saved, Cursor { epoch: 1, index: 2 });
    let saved_json = serde_json::to_string(&saved).unwrap();
    let cont: Vec<usize> = (0..6).flat_map(|_| a.next_batch(5)).map(|r| r.id).collect();
    let mut b = synthetic(13, 9);
    b.set_cursor(serde_json::from_str(&saved_json).unwrap()).unwrap();
    let resumed: Vec<usize> = (0..6).flat_map(|_| b.next_batch(5)).map(|r| r.id).collect();
    assert_eq!(cont, resumed);
    assert!(b.set_cursor(Cursor { epoch: 0, index: 14 }).is_err());
}

#[test]
fn filter_counts_dropped_prompts() {
    let mut ds = synthetic(10, 1);
    let removed = ds.filter(|r| r.problem.len() < 2 || r.problem == "p1").unwrap(); // keeps none of p0..p9 but p1
    assert_eq!((removed, ds.len(), ds.skipped.filtered), (9, 1, 9));
    assert_eq!(ds.next_batch(3).iter().map(|r| r.problem.as_str()).collect::<Vec<_>>(), ["p1", "p1", "p1"]);
    assert!(ds.filter(|_| false).is_err());
}

#[test]
fn deepscaler_aime_records_load() {
    // The first 150 records of DeepScaleR's train/aime.json (with their extra fields: solution,
    // year, …), committed so the test runs wherever the repository does.
    let p = Path::new("tests/fixtures/deepscaler/train-aime-first150.json");
    let mut ds = Dataset::load(&[p.to_path_buf()], 42, true).unwrap();
    let n = ds.len();
    assert_eq!(n, 150, "every record of the fixture has a problem and an answer");
    assert_eq!(n + ds.skipped.total(), serde_json::from_str::<Vec<serde_json::Value>>(&std::fs::read_to_string(p).unwrap()).unwrap().len());
    let ids: BTreeSet<usize> = ds.next_batch(n).into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), n);
    assert!(ds.records().iter().all(|r| !r.problem.is_empty() && !r.gold.answers().is_empty()));
}
