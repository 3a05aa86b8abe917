//! `scalerl data` on planted fixtures (tests/fixtures/data, made by scripts/make_data_fixtures.py):
//! every training record names what it plants in its `source` field, and each test checks the
//! tools classify it so — exact and near-duplicates, templated variants, boilerplate-only pairs,
//! leaked benchmark problems, ungradable golds — plus the formats (Parquet round trip, verl's
//! files as pandas writes them, the trainer and eval reading them) and bad input.
use indicatif::ProgressBar;
use scalerl::data::decontaminate::{decontaminate, DecontaminateOptions, Decontamination, OverlapConfig};
use scalerl::data::dedup::{dedup, DedupOptions};
use scalerl::data::filter::filter;
use scalerl::data::{read, write, Action, DataFile, Fields, OutputOptions, ParquetShape, Reason, ReportLine};
use scalerl::eval::Benchmark;
use scalerl::reward::{Gold, RewardConfig};
use scalerl::train::data::Dataset;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(name: &str) -> PathBuf {
    Path::new("tests/fixtures/data").join(name)
}

fn load(name: &str) -> DataFile {
    read(&fx(name), &Fields::default(), true).unwrap()
}

/// A scratch directory for one test, emptied first.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalerl-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `source` label of every training record, by index.
fn sources(f: &DataFile) -> Vec<String> {
    f.items.iter().map(|it| it.rest["source"].as_str().unwrap().to_string()).collect()
}

/// (index, reason, action, match index) of every report line, sorted.
fn lines(report: &[ReportLine]) -> Vec<(usize, Reason, Action, Option<usize>)> {
    let mut v: Vec<_> = report.iter().map(|l| (l.index, l.reason, l.action, l.match_index)).collect();
    v.sort_by_key(|x| (x.0, x.3));
    v
}

#[test]
fn dedup_classifies_planted_duplicates() {
    let train = load("train.jsonl");
    let src = sources(&train);
    let at = |s: &str| src.iter().position(|x| x == s).unwrap();
    let out = dedup(std::slice::from_ref(&train), &DedupOptions::default(), &ProgressBar::hidden());
    // Exactly the three planted duplicates: the boilerplate-sharing problems (T4..T8) are
    // different problems and the leaks have no twin inside the training set.
    assert_eq!(
        lines(&out.report),
        [
            (at("dup-exact"), Reason::Exact, Action::Removed, Some(at("clean"))),
            (at("dup-near"), Reason::NearDuplicate, Action::Removed, Some(5)),
            (at("dup-templated"), Reason::Templated, Action::Flagged, Some(at("clean"))),
            (at("dup-variant"), Reason::NearDuplicate, Action::Flagged, Some(at("variant-base"))),
        ]
    );
    assert_eq!(src[5], "boilerplate", "T11 is planted as a near-duplicate of T5");
    let variant = out.report.iter().find(|l| l.action == Action::Flagged && l.reason == Reason::NearDuplicate).unwrap();
    assert_eq!(variant.detail.as_deref(), Some("different answer: `6` vs `20`"));
    let kept: Vec<String> = out.kept(std::slice::from_ref(&train)).iter().map(|it| it.rest["source"].to_string()).collect();
    assert_eq!(kept.len(), train.items.len() - 2);
    assert!(kept.contains(&"\"dup-templated\"".to_string()), "templated variants are kept by default");

    let o = DedupOptions { drop_templated: true, ..DedupOptions::default() };
    let out = dedup(std::slice::from_ref(&train), &o, &ProgressBar::hidden());
    assert_eq!(out.removed(), 3);
    let l = out.report.iter().find(|l| l.reason == Reason::Templated).unwrap();
    assert_eq!((l.index, l.action), (at("dup-templated"), Action::Removed));
    let o = DedupOptions { drop_variants: true, ..DedupOptions::default() };
    let out = dedup(std::slice::from_ref(&train), &o, &ProgressBar::hidden());
    assert_eq!(out.removed(), 3);
    assert!(!out.keep[0][at("dup-variant")]);
}

#[test]
fn dedup_across_files_keeps_the_first_copy() {
    // The same file twice: every record of the second copy is an exact duplicate of the first.
    let train = load("train.jsonl");
    let files = [train.clone(), train.clone()];
    let out = dedup(&files, &DedupOptions::default(), &ProgressBar::hidden());
    let n = train.items.len();
    assert!(out.keep[1].iter().all(|k| !k), "{:?}", out.keep[1]);
    assert_eq!(out.kept(&files).len(), n - 2);
    let second: Vec<&ReportLine> = out.report.iter().filter(|l| l.action == Action::Removed && l.reason == Reason::Exact).collect();
    assert!(second.len() >= n, "one exact line per record of the second copy");
}

fn decontam(o: &DecontaminateOptions) -> (DataFile, Decontamination) {
    let train = load("train.jsonl");
    let eval = load("eval.json");
    let d = decontaminate(std::slice::from_ref(&train), &[eval], o, &ProgressBar::hidden());
    (train, d)
}

fn with_declined() -> DecontaminateOptions {
    DecontaminateOptions { report_declined: true, ..DecontaminateOptions::default() }
}

#[test]
fn decontaminate_finds_planted_leaks() {
    let (train, d) = decontam(&with_declined());
    let src = sources(&train);
    let at = |s: &str| src.iter().position(|x| x == s).unwrap();
    let found: Vec<_> = lines(&d.outcome.report).into_iter().filter(|l| l.2 != Action::Declined).collect();
    assert_eq!(
        found,
        [
            (at("leak-exact"), Reason::Exact, Action::Removed, Some(0)),
            (at("leak-near"), Reason::NearDuplicate, Action::Removed, Some(1)),
            (at("leak-overlap"), Reason::Overlap, Action::Removed, Some(2)),
            (at("leak-templated"), Reason::Templated, Action::Flagged, Some(3)),
        ]
    );
    let leaks = &d.leaks[0];
    assert_eq!(leaks.problems, 7);
    let by: Vec<(Reason, usize)> = leaks.by_reason.iter().map(|(r, n)| (*r, *n)).collect();
    assert_eq!(by, [(Reason::Exact, 1), (Reason::NearDuplicate, 1), (Reason::Overlap, 1), (Reason::Templated, 1)]);
    // The report names files, gives the similarity, and says whether the golds agree.
    let l = d.outcome.report.iter().find(|l| l.reason == Reason::Overlap).unwrap();
    assert!(l.file.ends_with("train.jsonl") && l.match_file.as_deref().unwrap().ends_with("eval.json"));
    assert_eq!(l.similarity, Some(1.0), "E2 lies whole inside T2: {l:?}");
    assert_eq!(l.detail.as_deref(), Some("same answer"));
    let l = d.outcome.report.iter().find(|l| l.reason == Reason::Templated).unwrap();
    assert_eq!(l.detail.as_deref(), Some("different answer: `4` vs `6`"));
    let l = d.outcome.report.iter().find(|l| l.reason == Reason::NearDuplicate).unwrap();
    assert!(l.similarity.unwrap() >= 0.8 && l.similarity.unwrap() < 1.0, "{l:?}");
    assert_eq!(d.outcome.kept(std::slice::from_ref(&train)).len(), train.items.len() - 3);
}

#[test]
fn boilerplate_only_pairs_are_declined() {
    let (train, d) = decontam(&with_declined());
    let src = sources(&train);
    // Every training problem under the m/n tail (T4..T8, T11) shares 13-grams with E4, and every
    // one under the multiple-choice tail (T13..T16) with E6: only boilerplate ones. Declined,
    // kept, counted.
    let mut declined: Vec<(usize, Option<usize>)> = d
        .outcome
        .report
        .iter()
        .filter(|l| l.reason == Reason::BoilerplateOnly)
        .map(|l| {
            assert_eq!(l.action, Action::Declined);
            (l.index, l.match_index)
        })
        .collect();
    declined.sort();
    let expected: Vec<(usize, Option<usize>)> = src
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.as_str() {
            "boilerplate" | "dup-near" => Some((i, Some(4))),
            "boilerplate-mc" => Some((i, Some(6))),
            _ => None,
        })
        .collect();
    assert_eq!(expected.len(), 10);
    assert_eq!(declined, expected);
    assert_eq!(d.pairs.boilerplate_only, 10);
    for (i, _) in &expected {
        assert!(d.outcome.keep[0][*i], "record {i} must be kept");
    }
    // The discount is what declines them: "r = 2" and E6's "r^2 cos 2θ = 4" share only the
    // multiple-choice tail, which is most of both problems, so counting it as rare text makes
    // their similarity pass the overlap bar and removes a problem that is not E6.
    let r2 = src.iter().position(|s| s == "boilerplate-mc").unwrap();
    assert!(d.pairs.boilerplate_only_similar >= 1, "{:?}", d.pairs);
    let no_discount = DecontaminateOptions {
        overlap: OverlapConfig { boilerplate_df: usize::MAX, ..OverlapConfig::default() },
        ..with_declined()
    };
    let (_, d2) = decontam(&no_discount);
    assert_eq!(d2.pairs.boilerplate_only, 0);
    let l = d2.outcome.report.iter().find(|l| l.index == r2 && l.action != Action::Declined).unwrap();
    assert_eq!((l.reason, l.action, l.match_index), (Reason::Overlap, Action::Removed, Some(6)), "{l:?}");
}

#[test]
fn overlap_needs_whole_problem_similarity() {
    // T20 opens with E2's first sentence (a rare passage) and then asks something else: the
    // whole-problem similarity is too low, so the pair is declined and T20 kept.
    let (train, d) = decontam(&with_declined());
    let t20 = sources(&train).iter().position(|s| s == "shared-passage").unwrap();
    let l: Vec<_> = d.outcome.report.iter().filter(|l| l.index == t20).collect();
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!((l[0].reason, l[0].action, l[0].match_index), (Reason::Dissimilar, Action::Declined, Some(2)));
    assert!(l[0].similarity.unwrap() < OverlapConfig::default().confirm);
    assert_eq!(d.pairs.dissimilar, 1);
    assert!(d.outcome.keep[0][t20]);
    // The confirmation is what keeps it: with a bar below its similarity it is removed.
    let low = DecontaminateOptions { overlap: OverlapConfig { confirm: 0.3, ..OverlapConfig::default() }, ..with_declined() };
    let (_, d) = decontam(&low);
    assert!(!d.outcome.keep[0][t20]);
}

#[test]
fn templated_leaks_can_be_dropped() {
    let o = DecontaminateOptions { drop_templated: true, ..DecontaminateOptions::default() };
    let (train, d) = decontam(&o);
    let t3 = sources(&train).iter().position(|s| s == "leak-templated").unwrap();
    assert!(!d.outcome.keep[0][t3]);
    assert_eq!(d.outcome.removed(), 4);
}

#[test]
fn filter_keeps_only_checkable_golds() {
    let f = read(&fx("filter.json"), &Fields::default(), false).unwrap();
    let out = filter(std::slice::from_ref(&f), &RewardConfig::default(), &ProgressBar::hidden());
    let got: Vec<(String, String)> = out
        .report
        .iter()
        .map(|l| {
            assert_eq!((l.reason, l.action), (Reason::Ungradable, Action::Removed));
            (f.items[l.index].problem.clone(), l.detail.as_deref().unwrap().split(':').next().unwrap().to_string())
        })
        .collect();
    let want: Vec<(String, String)> =
        [("P5", "empty"), ("P6", "empty"), ("P7", "prose"), ("P8", "unparsable"), ("P9", "no_answer")]
            .iter()
            .map(|(p, k)| (p.to_string(), k.to_string()))
            .collect();
    assert_eq!(got, want);
    let kept: Vec<&str> = out.kept(std::slice::from_ref(&f)).iter().map(|it| it.problem.as_str()).collect();
    assert_eq!(kept, ["P0", "P1", "P2", "P3", "P4", "P10"]);
}

#[test]
fn parquet_round_trips_in_both_shapes() {
    let dir = scratch("roundtrip");
    let train = load("train.jsonl");
    let filt = read(&fx("filter.json"), &Fields::default(), false).unwrap();
    // Strings, a list gold, a number, a missing answer: every answer form.
    let items: Vec<_> = train.items.iter().chain(&filt.items).collect();
    for shape in [ParquetShape::Plain, ParquetShape::Verl] {
        let p = dir.join(format!("{shape:?}.parquet"));
        write(&p, &items, &OutputOptions { parquet_shape: shape, prompt_template: String::new() }).unwrap();
        let back = read(&p, &Fields::default(), false).unwrap();
        assert_eq!(back.items.len(), items.len());
        for (a, b) in items.iter().zip(&back.items) {
            assert_eq!(a.problem, b.problem, "{shape:?}");
            // A list column makes every gold a list: compare the acceptable answers.
            let answers = |g: Option<Gold>| g.map(|g| g.answers().to_vec());
            assert_eq!(answers(a.gold()), answers(b.gold()), "{shape:?}: {}", a.problem);
        }
        if shape == ParquetShape::Verl {
            assert_eq!(back.items[0].rest["ability"], "math");
            assert_eq!(back.items[3].rest["extra_info"]["index"], 3);
        }
    }
    // JSON and JSONL keep every other field too.
    for ext in ["json", "jsonl"] {
        let p = dir.join(format!("out.{ext}"));
        write(&p, &items, &OutputOptions::default()).unwrap();
        let back = read(&p, &Fields::default(), false).unwrap();
        assert_eq!(back.items, items.iter().map(|i| (*i).clone()).collect::<Vec<_>>());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_verl_parquet_as_pandas_writes_it() {
    let f = load("verl_train.parquet");
    let train = load("train.jsonl");
    assert_eq!(f.items.len(), 3);
    for (a, b) in f.items.iter().zip(&train.items) {
        // The prompt template around the problem is stripped: the trainer adds its own.
        assert_eq!(a.problem, b.problem);
        assert_eq!(a.gold(), b.gold());
        assert_eq!(a.rest["ability"], "math");
    }
    assert_eq!(f.items[2].rest["extra_info"]["index"], 2);
    let n = load("plain_numeric.parquet");
    let golds: Vec<Gold> = n.items.iter().map(|it| it.gold().unwrap()).collect();
    assert_eq!(golds, [Gold::One("142.0".into()), Gold::One("0.75".into())]);
    // Columns named by options; the template text is kept when asked to keep it.
    let fields = Fields {
        problem: Some("prompt".into()),
        answer: Some("reward_model.ground_truth".into()),
        prompt_template: "{problem}".into(),
    };
    let raw = read(&fx("verl_train.parquet"), &fields, true).unwrap();
    assert!(raw.items[0].problem.ends_with("within \\boxed{}."), "{}", raw.items[0].problem);
}

#[test]
fn trainer_and_eval_read_every_format() {
    let dir = scratch("loaders");
    let train = load("train.jsonl");
    let items: Vec<_> = train.items.iter().collect();
    let mut paths = vec![fx("verl_train.parquet")];
    for (name, shape) in [("a.parquet", ParquetShape::Plain), ("b.parquet", ParquetShape::Verl), ("c.jsonl", ParquetShape::Plain), ("d.json", ParquetShape::Plain)] {
        let p = dir.join(name);
        write(&p, &items, &OutputOptions { parquet_shape: shape, prompt_template: String::new() }).unwrap();
        paths.push(p);
    }
    let ds = Dataset::load(&paths, 1, false).unwrap();
    assert_eq!(ds.len(), 3 + 4 * items.len());
    assert_eq!(ds.records()[3].problem, items[0].problem);
    assert_eq!(ds.records()[3].gold, Gold::One("60".into()));
    for p in &paths[1..] {
        let b = Benchmark::load(p).unwrap();
        assert_eq!(b.problems.len(), items.len(), "{}", p.display());
        assert_eq!(b.problems[2].gold, Gold::One("738".into()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_names_file_and_record() {
    let err = |p: &Path, fields: &Fields| format!("{:#}", read(p, fields, true).unwrap_err());
    let d = Fields::default();
    let e = err(&fx("no_answer.json"), &d);
    assert!(e.contains("no_answer.json") && e.contains("record 1") && e.contains("no answer"), "{e}");
    let e = err(&fx("bad_line.jsonl"), &d);
    assert!(e.contains("bad_line.jsonl") && e.contains("record 1 (line 2)") && e.contains("invalid JSON"), "{e}");
    let e = err(&fx("missing.json"), &d);
    assert!(e.contains("cannot read") && e.contains("missing.json"), "{e}");
    let e = err(&fx("verl_train.parquet"), &Fields { answer: Some("solution".into()), ..Fields::default() });
    assert!(e.contains("verl_train.parquet") && e.contains("no column `solution`") && e.contains("reward_model"), "{e}");
    let e = err(&fx("plain_numeric.parquet"), &Fields { problem: Some("question".into()), ..Fields::default() });
    assert!(e.contains("plain_numeric.parquet") && e.contains("no column `question` (the file has: problem, answer)"), "{e}");
    let e = err(&fx("question_column.parquet"), &d);
    assert!(e.contains("no column `problem` nor verl's `prompt` (the file has: question, final)"), "{e}");
    let named = Fields { problem: Some("question".into()), answer: Some("final".into()), ..Fields::default() };
    let q = read(&fx("question_column.parquet"), &named, true).unwrap();
    assert_eq!((q.items[0].problem.as_str(), q.items[0].gold()), ("What is $3^2$?", Some(Gold::One("9".into()))));
    let e = err(&fx("train.jsonl"), &Fields { problem: Some("question".into()), ..Fields::default() });
    assert!(e.contains("train.jsonl") && e.contains("record 0") && e.contains("no `question` field"), "{e}");
    // A file that is not Parquet, named as one.
    let dir = scratch("bad");
    let fake = dir.join("fake.parquet");
    std::fs::copy(fx("eval.json"), &fake).unwrap();
    let e = err(&fake, &d);
    assert!(e.contains("fake.parquet") && e.contains("not a readable Parquet file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn scalerl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn cli_writes_both_outputs_or_nothing() {
    let dir = scratch("cli");
    let (out, rep) = (dir.join("clean.json"), dir.join("report.jsonl"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (train, eval) = (s(&fx("train.jsonl")), s(&fx("eval.json")));
    let (ok, stdout, stderr) =
        scalerl(&["data", "decontaminate", &train, "--against", &eval, "--out", &s(&out), "--report", &s(&rep)]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("-> 17 kept") && stdout.contains("found in the training set"), "{stdout}");
    assert!(stdout.contains("eval.json: 4 of 7 (exact 1, near_duplicate 1, overlap 1, templated 1)"), "{stdout}");
    assert!(stdout.contains("declined 10 boilerplate-only"), "{stdout}");
    let report = std::fs::read_to_string(&rep).unwrap();
    assert_eq!(report.lines().count(), 4);
    for l in report.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for key in ["file", "index", "reason", "action", "match_file", "match_index", "similarity"] {
            assert!(v.get(key).is_some(), "{key} missing in {l}");
        }
    }
    // The trainer takes the cleaned file as it is.
    assert_eq!(Dataset::load(&[out.clone()], 1, true).unwrap().len(), 17);

    // Bad input in the second file: an error naming it and the record, and neither output written.
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&rep).unwrap();
    let (ok, _, stderr) = scalerl(&["data", "dedup", &train, &s(&fx("no_answer.json")), "--out", &s(&out), "--report", &s(&rep)]);
    assert!(!ok);
    assert!(stderr.starts_with("error: ") && stderr.contains("no_answer.json: record 1"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists() && !rep.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no temporary files left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stats_counts_prompts_over_the_limit() {
    use scalerl::data::stats::prompt_lengths;
    use scalerl::model::{ChatTemplate, TextTokenizer};
    let tok = TextTokenizer::load(Path::new("tests/fixtures/tokenizer")).unwrap();
    let train = load("train.jsonl");
    let items: Vec<_> = train.items.iter().collect();
    let template = scalerl::eval::DEEPSCALER_PROMPT_TEMPLATE;
    let lens = prompt_lengths(&items, &tok, ChatTemplate::R1Distill, template).unwrap();
    // The prompt template and the chat template are counted, not just the problem.
    let bare = prompt_lengths(&items, &tok, ChatTemplate::R1Distill, "{problem}").unwrap();
    let direct = tok.encode(&items[0].problem, false).unwrap().len();
    assert!(lens.iter().zip(&bare).all(|(a, b)| a > b) && bare[0] > direct, "{lens:?} {bare:?} {direct}");
    let mut sorted = lens.clone();
    sorted.sort();
    let limit = sorted[sorted.len() / 2];
    let over = lens.iter().filter(|&&l| l > limit).count();
    assert!(over > 0 && over < lens.len());

    let dir = scratch("stats");
    let (out, rep) = (dir.join("kept.jsonl"), dir.join("long.jsonl"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, stdout, stderr) = scalerl(&[
        "data", "stats", &s(&fx("train.jsonl")), "--tokenizer", "tests/fixtures/tokenizer", "--chat-template", "r1-distill",
        "--max-prompt-len", &limit.to_string(), "--out", &s(&out), "--report", &s(&rep),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("answer kinds: choice 4, integer 16;"), "{stdout}");
    assert!(stdout.contains(&format!("over {limit}: {over} (")), "{stdout}");
    let report = std::fs::read_to_string(&rep).unwrap();
    assert_eq!(report.lines().count(), over);
    assert!(report.lines().all(|l| l.contains("\"reason\":\"too_long\"")));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), lens.len() - over);
    std::fs::remove_dir_all(&dir).unwrap();
}
