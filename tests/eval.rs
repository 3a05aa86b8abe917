//! Evaluation: metrics on synthetic samples, data loading, the library call on the tiny fixture
//! model, the `scalerl eval` command end to end (its files and their shapes), and resume.
mod common;
use common::fixture;
use scalerl::engine::FinishReason;
use scalerl::eval::{self, output, Benchmark, EvalOptions, SampleRecord};
use scalerl::model::{ChatTemplate, Model, TextTokenizer};
use scalerl::reward::{Gold, RewardConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

const BENCHES: [&str; 5] = ["aime", "amc", "math", "minerva", "olympiad_bench"];

fn rec(bench: &str, p: usize, s: usize, correct: bool, tokens: usize, finish: &str) -> SampleRecord {
    SampleRecord {
        benchmark: bench.into(),
        problem_index: p,
        sample_index: s,
        prompt: format!("prompt {p}"),
        response: String::new(),
        answer: None,
        reward: if correct { 1.0 } else { 0.0 },
        reason: if correct { "correct".into() } else { "wrong".into() },
        tokens,
        finish: finish.into(),
    }
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("scalerl-eval-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scalerl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn data(b: &str) -> PathBuf {
    fixture("eval").join(format!("{b}.json"))
}

fn lines(path: &Path) -> Vec<SampleRecord> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

// ---- metrics ---------------------------------------------------------------------------------

#[test]
fn metrics_on_synthetic_samples() {
    // 3 problems × 4 samples: p0 has 2 right (lengths 10, 30), p1 none (one cut at 100),
    // p2 one right (20); another benchmark's samples are ignored.
    let mut s = vec![
        rec("a", 0, 0, true, 10, "stop"),
        rec("a", 0, 1, true, 30, "stop"),
        rec("a", 0, 2, false, 40, "stop"),
        rec("a", 0, 3, false, 50, "stop"),
        rec("a", 1, 0, false, 60, "stop"),
        rec("a", 1, 1, false, 100, "length"),
        rec("a", 1, 2, false, 70, "stop"),
        rec("a", 1, 3, false, 80, "stop"),
        rec("a", 2, 0, false, 90, "stop"),
        rec("a", 2, 1, true, 20, "stop"),
        rec("a", 2, 2, false, 10, "stop"),
        rec("a", 2, 3, false, 10, "stop"),
    ];
    s.push(rec("b", 0, 0, true, 5, "stop"));
    let r = eval::summarize("a", &s);
    assert_eq!((r.problems, r.samples, r.n), (3, 12, 4));
    assert!((r.pass_at_1 - 3.0 / 12.0).abs() < 1e-12);
    assert!((r.pass_at_n - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.mean_len_correct.unwrap() - 20.0).abs() < 1e-12);
    let wrong = [40, 50, 60, 100, 70, 80, 90, 10, 10];
    let mean_wrong = wrong.iter().sum::<usize>() as f64 / wrong.len() as f64;
    assert!((r.mean_len_incorrect.unwrap() - mean_wrong).abs() < 1e-12);
    assert!((r.cut_share - 1.0 / 12.0).abs() < 1e-12);

    let b = eval::summarize("b", &s);
    assert_eq!((b.problems, b.pass_at_1, b.pass_at_n, b.mean_len_incorrect), (1, 1.0, 1.0, None));
    let none = eval::summarize("c", &s);
    assert_eq!((none.problems, none.samples, none.pass_at_1, none.mean_len_correct), (0, 0, 0.0, None));

    // A cut sample never counts as correct, even with a reward written in it.
    let mut cut = rec("c", 0, 0, true, 8, "length");
    cut.reason = "correct".into();
    let r = eval::summarize("c", &[cut]);
    assert_eq!((r.pass_at_1, r.pass_at_n, r.cut_share), (0.0, 0.0, 1.0));
    assert_eq!(r.mean_len_correct, None);
    assert_eq!(r.mean_len_incorrect, Some(8.0));

    let csv = eval::to_csv(&[eval::summarize("a", &s), b]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].starts_with("benchmark,problems,n,samples,pass_at_1,pass_at_n"), "{csv}");
    assert!(rows[1].starts_with("a,3,4,12,0.250000,0.666667,20.0,"), "{csv}");
    assert!(rows[2].starts_with("b,1,1,1,1.000000,1.000000,5.0,,"), "{csv}");
}

#[test]
fn grading_lists_cuts_and_think_close() {
    let cfg = RewardConfig::default();
    let list = Gold::from_json(&serde_json::json!(["9.6\n"])).unwrap();
    let (r, why, ans) = eval::grade_response("think</think> so \\boxed{9.6}", &list, FinishReason::Stop, &cfg);
    assert_eq!((r, why.as_str(), ans.as_deref()), (1.0, "correct", Some("9.6")));
    let several = Gold::from_json(&serde_json::json!(["2", "$\\frac{1}{2}$"])).unwrap();
    let (r, _, _) = eval::grade_response("</think>\\boxed{0.5}", &several, FinishReason::Stop, &cfg);
    assert_eq!(r, 1.0);
    let num = Gold::from_json(&serde_json::json!(142.0)).unwrap();
    let (r, _, _) = eval::grade_response("</think>\\boxed{142}", &num, FinishReason::Stop, &cfg);
    assert_eq!(r, 1.0);
    // No </think>: wrong by default, as in DeepScaleR.
    let (r, why, _) = eval::grade_response("\\boxed{9.6}", &list, FinishReason::Stop, &cfg);
    assert_eq!((r, why.as_str()), (0.0, "no_think_close"));
    // Cut at the budget: wrong even if the box is right.
    let (r, why, ans) = eval::grade_response("</think>\\boxed{9.6}", &list, FinishReason::Length, &cfg);
    assert_eq!((r, why.as_str(), ans.as_deref()), (0.0, "cut", Some("9.6")));
    let (r, why, _) = eval::grade_response("</think>\\boxed{9.7}", &list, FinishReason::Stop, &cfg);
    assert_eq!((r, why.as_str()), (0.0, "wrong"));
}

#[test]
fn the_prompt_is_deepscalers() {
    assert_eq!(
        eval::deepscaler_prompt("What is $1+1$?"),
        "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}."
    );
    // A problem that mentions `{problem}` is not expanded again.
    assert!(eval::deepscaler_prompt("{problem}").starts_with("{problem} Let's"));
    let tok = TextTokenizer::load(&fixture("tiny-qwen2")).unwrap();
    assert_eq!(eval::default_chat_template(&tok), ChatTemplate::Model);
}

// ---- data ------------------------------------------------------------------------------------

#[test]
fn loads_every_answer_kind() {
    let aime = Benchmark::load(&data("aime")).unwrap();
    assert_eq!(aime.name, "aime");
    assert_eq!(aime.problems.len(), 3);
    assert_eq!(aime.problems[1].gold, Gold::One("025".into()));
    let amc = Benchmark::load(&data("amc")).unwrap();
    assert_eq!(amc.problems[0].gold, Gold::One("142.0".into()));
    let minerva = Benchmark::load(&data("minerva")).unwrap();
    assert_eq!(minerva.problems[0].gold, Gold::Any(vec!["9.6\n".into()]));
    let ob = Benchmark::load(&data("olympiad_bench")).unwrap();
    assert_eq!(ob.name, "olympiad_bench");
    assert!(matches!(ob.problems[0].gold, Gold::Any(_)));
    let mixed = Benchmark::from_json_str(
        "m",
        r#"[{"problem":"p","answer":3},{"problem":"q","answer":["a",2.5]},{"problem":"r","answer":"x","extra":1}]"#,
    )
    .unwrap();
    assert_eq!(mixed.problems[0].gold, Gold::One("3".into()));
    assert_eq!(mixed.problems[1].gold, Gold::Any(vec!["a".into(), "2.5".into()]));
}

#[test]
fn bad_files_name_the_file_and_the_record() {
    let d = TempDir::new("bad");
    let check = |name: &str, text: &str, needles: &[&str]| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = format!("{:#}", Benchmark::load(&p).unwrap_err());
        assert!(e.contains(p.to_str().unwrap()), "{e}");
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
    };
    check("syntax.json", "[{\"problem\": ", &["invalid JSON"]);
    check("object.json", "{\"problem\": \"p\", \"answer\": 1}", &["list"]);
    check("empty.json", "[]", &["no records"]);
    let good = r#"{"problem":"p","answer":"1"}"#;
    check("noanswer.json", &format!("[{good},{good},{{\"problem\":\"p\"}}]"), &["record 2", "answer"]);
    check("noproblem.json", &format!("[{good},{{\"answer\":\"1\"}}]"), &["record 1", "problem"]);
    check("badanswer.json", r#"[{"problem":"p","answer":{"x":1}}]"#, &["record 0", "answer"]);
    check("nested.json", &format!("[{good},{{\"problem\":\"p\",\"answer\":[[1]]}}]"), &["record 1"]);
    check("emptylist.json", "[{\"problem\":\"p\",\"answer\":[]}]", &["record 0", "empty"]);
    check("notstr.json", "[{\"problem\":5,\"answer\":\"1\"}]", &["record 0", "problem"]);
    let missing = d.path().join("missing.json");
    let e = format!("{:#}", Benchmark::load(&missing).unwrap_err());
    assert!(e.contains("missing.json"), "{e}");

    // Through the command: one error line naming the file.
    let p = d.path().join("noanswer.json");
    let m = fixture("tiny-qwen2");
    let (code, _, err) = scalerl(&["eval", "--model", m.to_str().unwrap(), "--data", p.to_str().unwrap(), "--n", "1"]);
    assert_ne!(code, 0);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("noanswer.json") && err.contains("record 2"), "{err}");
}

// ---- the library call ------------------------------------------------------------------------

#[test]
fn evaluate_on_the_tiny_model_is_deterministic_across_batching() {
    let dir = fixture("tiny-qwen2");
    let model = Model::load(&dir).unwrap();
    let tok = TextTokenizer::load(&dir).unwrap();
    let benches: Vec<Benchmark> = ["math", "amc"].iter().map(|b| Benchmark::load(&data(b)).unwrap()).collect();
    let mut opts = EvalOptions {
        n: 3,
        max_response_len: 6,
        chat_template: ChatTemplate::Model,
        stop_token_ids: vec![286],
        max_batch_sequences: 100,
        ..Default::default()
    };
    let mut calls = Vec::new();
    let (results, samples) = eval::evaluate_resumable(&model, &tok, &benches, &opts, vec![], |p, s| {
        calls.push((p.problems_done, p.problems_total, s.len()));
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, (1..=6).map(|i| (i, 6, 3)).collect::<Vec<_>>());
    assert_eq!(results.len(), 2);
    for (r, b) in results.iter().zip(["math", "amc"]) {
        assert_eq!((r.benchmark.as_str(), r.problems, r.n, r.samples), (b, 3, 3, 9));
        // Random tokens: nothing is right.
        assert_eq!((r.pass_at_1, r.pass_at_n), (0.0, 0.0));
        assert!(r.cut_share > 0.0 && r.cut_share <= 1.0);
    }
    assert_eq!(samples.len(), 18);
    for s in &samples {
        assert!(s.tokens >= 1 && s.tokens <= 6);
        assert_eq!(s.finish == "length", s.tokens == 6 && s.reason == "cut");
        assert!(s
            .prompt
            .contains("Let's think step by step and output the final answer within \\boxed{}.<｜Assistant｜>"));
    }
    // Samples of one problem differ (own seeds); one problem per batch gives the same samples.
    assert!(samples[0].response != samples[1].response || samples[1].response != samples[2].response);
    opts.max_batch_sequences = 1;
    let mut n = 0;
    let again = eval::evaluate(&model, &tok, &benches, &opts, |_| n += 1).unwrap();
    assert_eq!(n, 6);
    assert_eq!(again, results);
    let (_, samples2) = eval::evaluate_resumable(&model, &tok, &benches, &opts, vec![], |_, _| Ok(())).unwrap();
    assert_eq!(samples2, samples);
    // Another seed, other samples.
    opts.seed = 1;
    let (_, samples3) = eval::evaluate_resumable(&model, &tok, &benches, &opts, vec![], |_, _| Ok(())).unwrap();
    assert_ne!(samples3, samples);
}

#[test]
fn finished_samples_keep_only_complete_problems() {
    let s = vec![
        rec("a", 0, 0, false, 1, "stop"),
        rec("a", 1, 0, false, 1, "stop"),
        rec("a", 0, 1, false, 1, "stop"),
        rec("a", 0, 1, false, 2, "stop"), // duplicate: the first is kept
        rec("a", 2, 5, false, 1, "stop"), // outside 0..n
    ];
    let f = eval::finished_samples(s, 2);
    assert_eq!(
        f.iter().map(|r| (r.problem_index, r.sample_index, r.tokens)).collect::<Vec<_>>(),
        vec![(0, 0, 1), (0, 1, 1)]
    );
}

#[test]
fn read_samples_ignores_a_truncated_last_line_only() {
    let d = TempDir::new("read");
    let p = d.path().join("s.jsonl");
    assert!(output::read_samples(&p).unwrap().is_empty());
    let line = serde_json::to_string(&rec("a", 0, 0, false, 3, "stop")).unwrap();
    std::fs::write(&p, format!("{line}\n{line}\n{}", &line[..20])).unwrap();
    assert_eq!(output::read_samples(&p).unwrap().len(), 2);
    std::fs::write(&p, format!("{line}\n{}\n{line}\n", &line[..20])).unwrap();
    let e = output::read_samples(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("s.jsonl"), "{e}");
}

// ---- the command -----------------------------------------------------------------------------

/// Runs `scalerl eval` into `out`; returns (stdout, stderr).
fn eval_run(model: &Path, benches: &[&str], out: &Path, extra: &[&str]) -> (String, String) {
    let mut args: Vec<String> = vec!["eval".into(), "--model".into(), model.to_str().unwrap().into()];
    for b in benches {
        args.push("--data".into());
        args.push(data(b).to_str().unwrap().into());
    }
    args.extend(["--out".into(), out.to_str().unwrap().into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (code, stdout, err) = scalerl(&a);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    (stdout, err)
}

/// Runs `scalerl eval` into a fresh `out`; returns stdout (the table).
fn eval_cmd(model: &Path, benches: &[&str], out: &Path, extra: &[&str]) -> String {
    let (stdout, err) = eval_run(model, benches, out, extra);
    assert!(err.contains("problems]") && err.contains("samples/s") && err.contains("pass@1"), "{err}");
    stdout
}

fn check_outputs(out: &Path, benches: &[&str], problems: usize, n: usize) -> Vec<SampleRecord> {
    let samples = lines(&out.join("samples.jsonl"));
    assert_eq!(samples.len(), benches.len() * problems * n);
    for b in benches {
        for p in 0..problems {
            let mut idx: Vec<usize> =
                samples.iter().filter(|s| s.benchmark == *b && s.problem_index == p).map(|s| s.sample_index).collect();
            idx.sort();
            assert_eq!(idx, (0..n).collect::<Vec<_>>(), "{b} problem {p}");
        }
    }
    // Every field is there, with its type.
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out.join("samples.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    for (k, pred) in [
        ("benchmark", serde_json::Value::is_string as fn(&serde_json::Value) -> bool),
        ("problem_index", serde_json::Value::is_u64),
        ("sample_index", serde_json::Value::is_u64),
        ("prompt", serde_json::Value::is_string),
        ("response", serde_json::Value::is_string),
        ("reward", serde_json::Value::is_number),
        ("reason", serde_json::Value::is_string),
        ("tokens", serde_json::Value::is_u64),
        ("finish", serde_json::Value::is_string),
    ] {
        assert!(pred(&first[k]), "{k} in {first}");
    }
    assert!(first.get("answer").is_some());
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), benches.len());
    for (r, b) in results.iter().zip(benches) {
        assert_eq!(r["benchmark"], *b);
        assert_eq!(r["problems"], problems);
        assert_eq!(r["n"], n);
        assert_eq!(r["samples"], problems * n);
        assert_eq!(r["pass_at_1"], 0.0);
        assert_eq!(r["pass_at_n"], 0.0);
        assert!(r["cut_share"].as_f64().unwrap() <= 1.0);
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + benches.len());
    for (row, b) in csv.lines().skip(1).zip(benches) {
        assert!(row.starts_with(&format!("{b},{problems},{n},{},", problems * n)), "{row}");
        assert_eq!(row.split(',').count(), 9, "{row}");
    }
    samples
}

#[test]
fn eval_command_writes_results_and_samples() {
    let d = TempDir::new("cli");
    let out = d.path().join("out");
    let m = fixture("tiny-qwen2");
    let table = eval_cmd(&m, &["math", "amc"], &out, &["--n", "2", "--max-response-len", "8", "--seed", "3"]);
    assert!(
        table.contains("math") && table.contains("amc") && table.contains("Avg") && table.contains("pass@1"),
        "{table}"
    );
    check_outputs(&out, &["math", "amc"], 3, 2);
    // A run in the same directory with other settings is refused.
    let (code, _, err) = scalerl(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        data("math").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n",
        "3",
        "--max-response-len",
        "8",
        "--seed",
        "3",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn eval_command_resumes_without_redoing_finished_problems() {
    let d = TempDir::new("resume");
    let m = fixture("tiny-qwen2");
    let settings = ["--n", "3", "--max-response-len", "8", "--batch-size", "3"];
    fn with<'a>(settings: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        settings.iter().chain(extra).copied().collect()
    }

    // The reference: one uninterrupted run.
    let full = d.path().join("full");
    eval_cmd(&m, &["math", "amc"], &full, &settings);
    let reference = check_outputs(&full, &["math", "amc"], 3, 3);

    // An interrupted run: the first problem of each benchmark…
    let out = d.path().join("out");
    eval_cmd(&m, &["math", "amc"], &out, &with(&settings, &["--max-problems", "1"]));
    let path = out.join("samples.jsonl");
    let first = lines(&path);
    assert_eq!(first.len(), 2 * 3);
    // …then half of problem 1 of math, and a line cut mid-write. A finished sample is marked
    // so that we can see it is not generated again.
    let mut text = String::new();
    for (i, s) in first.iter().enumerate() {
        let mut s = s.clone();
        if i == 0 {
            s.response = "SENTINEL".into();
        }
        text += &(serde_json::to_string(&s).unwrap() + "\n");
    }
    let partial =
        reference.iter().find(|s| s.benchmark == "math" && s.problem_index == 1 && s.sample_index == 0).unwrap();
    let mut partial = partial.clone();
    partial.response = "PARTIAL".into();
    text += &(serde_json::to_string(&partial).unwrap() + "\n");
    let cut = serde_json::to_string(&reference[4]).unwrap();
    text += &cut[..cut.len() / 2];
    std::fs::write(&path, text).unwrap();

    let (code, _, err) = scalerl(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            data("math").to_str().unwrap(),
            "--data",
            data("amc").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .copied()
        .chain(settings)
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming: 2 finished problems"), "{err}");
    // Only the 4 unfinished problems were generated.
    assert!(err.contains("[3/6 problems]") && !err.contains("[2/6 problems]"), "{err}");
    let resumed = check_outputs(&out, &["math", "amc"], 3, 3);
    assert_eq!(resumed.iter().filter(|s| s.response == "SENTINEL").count(), 1);
    assert!(resumed.iter().all(|s| s.response != "PARTIAL"));
    // Apart from the marked sample, the same samples as the uninterrupted run (seeds per sample).
    let key = |s: &SampleRecord| (s.benchmark.clone(), s.problem_index, s.sample_index);
    let mut a: Vec<_> = resumed.iter().filter(|s| s.response != "SENTINEL").cloned().collect();
    let mut b: Vec<_> = reference.iter().filter(|s| key(s) != key(&first[0])).cloned().collect();
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b);
    let r1 = std::fs::read_to_string(full.join("results.csv")).unwrap();
    let r2 = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(r1, r2);

    // A finished run resumes to nothing new.
    let before = std::fs::read_to_string(&path).unwrap();
    let (table, err) = eval_run(&m, &["math", "amc"], &out, &settings);
    assert!(err.contains("resuming: 6 finished problems") && !err.contains("problems]"), "{err}");
    assert!(table.contains("Avg"), "{table}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap(), r1);
}

#[test]
fn eval_command_on_samples_of_the_five_test_sets() {
    // The real prompts are longer than the fixture's 256-token context: a copy with a longer one.
    let d = TempDir::new("five");
    let m = d.path().join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(fixture("tiny-qwen2").join(f), m.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 1024"),
    )
    .unwrap();
    let out = d.path().join("out");
    let table = eval_cmd(&m, &BENCHES, &out, &["--n", "2", "--max-response-len", "4"]);
    for b in BENCHES {
        assert!(table.contains(b), "{table}");
    }
    let samples = check_outputs(&out, &BENCHES, 3, 2);
    assert!(samples.iter().all(|s| s.tokens <= 4));
    // The prompt holds the problem as written in the file.
    let aime = Benchmark::load(&data("aime")).unwrap();
    let s = samples.iter().find(|s| s.benchmark == "aime" && s.problem_index == 2).unwrap();
    assert!(s.prompt.contains(&aime.problems[2].problem));
}

#[test]
fn eval_command_runs_on_the_cuda_backend_in_interpret_mode() {
    // The CUDA backend's kernels on the CPU: the same command over `CudaModel` (bf16, so other
    // samples than the f32 CPU model).
    let d = TempDir::new("interpret");
    let out = d.path().join("out");
    let m = fixture("tiny-qwen2");
    eval_cmd(
        &m,
        &["amc"],
        &out,
        &["--n", "2", "--max-response-len", "3", "--max-problems", "1", "--device", "interpret"],
    );
    let samples = lines(&out.join("samples.jsonl"));
    assert_eq!(samples.len(), 2);
    assert!(samples.iter().all(|s| s.tokens <= 3 && s.benchmark == "amc" && s.problem_index == 0));
}
