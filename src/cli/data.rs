//! `scalerl data`: training-data tools (`src/data/`).
//!
//! * `dedup FILE...` — exact duplicates after normalisation and near-duplicates (MinHash + LSH);
//! * `decontaminate FILE... --against EVAL...` — training records that match evaluation problems;
//! * `filter FILE...` — records whose gold the math reward cannot check;
//! * `stats FILE...` — answer kinds and prompt token lengths.
//!
//! Each reads DeepScaleR JSON, JSONL or Parquet, prints a summary on stdout, and with `--out`
//! writes the kept records of all inputs (in order) and with `--report` one JSON line per
//! removed or flagged record. Both files are built in full before either is written, and each is
//! written atomically: bad input leaves nothing behind.

use crate::data::decontaminate::{decontaminate, DecontaminateOptions, OverlapConfig};
use crate::data::dedup::{dedup, DedupOptions};
use crate::data::formats::{encode, read, DataFile, Fields, Item, OutputOptions, ParquetShape};
use crate::data::matching::MatchConfig;
use crate::data::report::{counts, to_jsonl, Action, Outcome, Reason, ReportLine};
use crate::data::stats::{answer_kinds, length_stats, prompt_lengths, LengthStats};
use crate::data::{atomic::write_atomic, filter::filter};
use crate::eval::DEEPSCALER_PROMPT_TEMPLATE;
use crate::model::{ChatTemplate, TextTokenizer};
use crate::reward::RewardConfig;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Remove exact (after normalisation) and near-duplicate problems; flag templated variants.
    Dedup(DedupArgs),
    /// Remove training problems found in evaluation sets (exact, near-duplicate, long n-gram
    /// overlap that is not boilerplate); flag templated variants.
    Decontaminate(DecontaminateArgs),
    /// Remove problems whose gold answer the math reward cannot check.
    Filter(FilterArgs),
    /// Answer kinds and prompt lengths in tokens (share over --max-prompt-len).
    Stats(StatsArgs),
}

/// Where records come from.
#[derive(clap::Args, Debug, Clone)]
pub struct InputArgs {
    /// Data files: DeepScaleR JSON (a list), JSONL (`.jsonl`) or Parquet (`.parquet`).
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Field holding the problem, dots reaching into structs [default: `problem`, else verl's
    /// `prompt` (chat messages: the user message, without the prompt template around it)].
    #[arg(long, value_name = "FIELD")]
    pub problem_field: Option<String>,
    /// Field holding the gold answer [default: `answer`, else verl's `reward_model.ground_truth`].
    #[arg(long, value_name = "FIELD")]
    pub answer_field: Option<String>,
    /// The user message around `{problem}`: stripped from chat-message problems on reading,
    /// added to verl-shaped Parquet output, used for `stats` token counts.
    #[arg(long, value_name = "TEXT", default_value = DEEPSCALER_PROMPT_TEMPLATE)]
    pub prompt_template: String,
}

impl InputArgs {
    fn fields(&self) -> Fields {
        Fields { problem: self.problem_field.clone(), answer: self.answer_field.clone(), prompt_template: self.prompt_template.clone() }
    }

    fn read(&self, need_answer: bool) -> Result<Vec<DataFile>> {
        let fields = self.fields();
        self.inputs.iter().map(|p| read(p, &fields, need_answer)).collect()
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Columns `problem` and `answer`.
    Plain,
    /// verl's layout (`prompt` chat messages, `reward_model.ground_truth`, …).
    Verl,
}

/// Where results go.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write the kept records here; the format follows the extension (`.json`, `.jsonl`,
    /// `.parquet`). Written atomically once everything succeeded.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the report here: one JSON line per removed or flagged record.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Layout of Parquet output.
    #[arg(long, value_enum, default_value_t = Shape::Plain)]
    pub parquet_shape: Shape,
}

/// The near-duplicate rules.
#[derive(clap::Args, Debug, Clone)]
pub struct MatchArgs {
    /// Tokens per shingle (MinHash and Jaccard work on sets of these).
    #[arg(long, default_value_t = MatchConfig::default().ngram)]
    pub ngram: usize,
    /// Near-duplicate: Jaccard similarity of the shingles at least this (numbers unchanged).
    #[arg(long, default_value_t = MatchConfig::default().threshold)]
    pub threshold: f64,
    /// Templated variant: numbers changed, and Jaccard of the number-masked shingles at least this.
    #[arg(long, default_value_t = MatchConfig::default().templated_threshold)]
    pub templated_threshold: f64,
    /// LSH bands (candidates share one band of `rows` MinHash values).
    #[arg(long, default_value_t = MatchConfig::default().bands)]
    pub bands: usize,
    /// MinHash values per LSH band.
    #[arg(long, default_value_t = MatchConfig::default().rows)]
    pub rows: usize,
    /// MinHash seed.
    #[arg(long, default_value_t = MatchConfig::default().seed)]
    pub seed: u64,
    /// Remove templated variants instead of flagging them.
    #[arg(long)]
    pub drop_templated: bool,
}

impl MatchArgs {
    fn config(&self) -> Result<MatchConfig> {
        anyhow::ensure!(self.ngram > 0 && self.bands > 0 && self.rows > 0, "--ngram, --bands and --rows must be positive");
        for (name, t) in [("--threshold", self.threshold), ("--templated-threshold", self.templated_threshold)] {
            anyhow::ensure!((0.0..=1.0).contains(&t) && t > 0.0, "{name} must be in (0, 1], got {t}");
        }
        Ok(MatchConfig {
            ngram: self.ngram,
            threshold: self.threshold,
            templated_threshold: self.templated_threshold,
            bands: self.bands,
            rows: self.rows,
            seed: self.seed,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct DedupArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub matching: MatchArgs,
    /// Remove near-duplicates whose gold answer differs from their match's (another question on
    /// the same text) instead of flagging them.
    #[arg(long)]
    pub drop_variants: bool,
}

#[derive(clap::Args, Debug)]
pub struct DecontaminateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Evaluation files to check the training files against (same formats and fields).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub against: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub matching: MatchArgs,
    /// Tokens per long n-gram of the overlap rule.
    #[arg(long, default_value_t = OverlapConfig::default().ngram)]
    pub overlap_ngram: usize,
    /// A long n-gram found in this many records or more (training and evaluation together) is
    /// boilerplate and does not count as overlap.
    #[arg(long, default_value_t = OverlapConfig::default().boilerplate_df)]
    pub boilerplate_df: usize,
    /// A pair sharing a rare long n-gram is overlap when the shorter problem's shingles are at
    /// least this contained in the other's.
    #[arg(long, default_value_t = OverlapConfig::default().confirm)]
    pub overlap_confirm: f64,
    /// Also report the candidate pairs that were declined (boilerplate only, dissimilar).
    #[arg(long)]
    pub report_declined: bool,
}

#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Model directory with tokenizer.json (and tokenizer_config.json for its chat template);
    /// without it, prompt lengths are given in characters only.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// `model` (tokenizer_config.json's template), `r1-distill` or `r1-distill-think`
    /// [default: the model's own if it has one, else r1-distill].
    #[arg(long, value_name = "NAME")]
    pub chat_template: Option<ChatTemplate>,
    /// The trainer's `data.max_prompt_len`: prompts longer than this are counted (and, with
    /// --report, listed; with --out, left out).
    #[arg(long, default_value_t = 1024)]
    pub max_prompt_len: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(a: &DataArgs) -> Result<()> {
    match &a.command {
        DataCommand::Dedup(a) => run_dedup(a),
        DataCommand::Decontaminate(a) => run_decontaminate(a),
        DataCommand::Filter(a) => run_filter(a),
        DataCommand::Stats(a) => run_stats(a),
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (logs stay clean).
fn bar(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed}<{eta}]")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(0).with_style(style).with_message(what.to_string())
}

/// Encodes both outputs, then writes them (each atomically): a failure while encoding writes
/// nothing.
fn write_outputs(o: &OutputArgs, items: &[&Item], report: &[ReportLine], template: &str) -> Result<()> {
    let opts = OutputOptions {
        parquet_shape: match o.parquet_shape {
            Shape::Plain => ParquetShape::Plain,
            Shape::Verl => ParquetShape::Verl,
        },
        prompt_template: template.to_string(),
    };
    let out = o.out.as_ref().map(|p| encode(p, items, &opts).map(|b| (p, b))).transpose()?;
    let rep = o.report.as_ref().map(|p| to_jsonl(report).map(|b| (p, b))).transpose()?;
    for (p, bytes) in out.iter().chain(rep.iter()) {
        write_atomic(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &o.out {
        println!("wrote {} records to {}", items.len(), p.display());
    }
    if let Some(p) = &o.report {
        println!("wrote {} report lines to {}", report.len(), p.display());
    }
    Ok(())
}

fn total(files: &[DataFile]) -> usize {
    files.iter().map(|f| f.items.len()).sum()
}

/// `reason N, reason N` for the lines of one action.
fn by_reason(lines: &[ReportLine], action: Action) -> String {
    let c: Vec<String> = counts(lines)
        .into_iter()
        .filter(|((_, a), _)| *a == action)
        .map(|((r, _), n)| format!("{} {n}", r.as_str()))
        .collect();
    if c.is_empty() {
        "none".into()
    } else {
        c.join(", ")
    }
}

/// One line per input file: records, removed and flagged by reason; and how many matches have
/// another gold answer than the record they match (variants rather than copies: worth a look).
fn print_per_file(files: &[DataFile], out: &Outcome) {
    let other = |a: Action| {
        out.report.iter().filter(|l| l.action == a && l.detail.as_deref().is_some_and(|d| d.starts_with("different answer"))).count()
    };
    for f in files {
        let name = f.name();
        let lines: Vec<ReportLine> = out.report.iter().filter(|l| l.file == name).cloned().collect();
        println!(
            "  {name}: {} records; removed: {}; flagged: {}",
            f.items.len(),
            by_reason(&lines, Action::Removed),
            by_reason(&lines, Action::Flagged)
        );
    }
    let (removed, flagged) = (other(Action::Removed), other(Action::Flagged));
    if removed + flagged > 0 {
        println!("  with another gold answer than their match: {removed} of the removed, {flagged} of the flagged (see the report)");
    }
}

fn run_dedup(a: &DedupArgs) -> Result<()> {
    let t = Instant::now();
    let files = a.input.read(true)?;
    let o = DedupOptions {
        matching: a.matching.config()?,
        drop_templated: a.matching.drop_templated,
        drop_variants: a.drop_variants,
    };
    let pb = bar("dedup");
    let out = dedup(&files, &o, &pb);
    pb.finish_and_clear();
    let kept = out.kept(&files);
    println!("dedup: {} records in {} files -> {} kept ({:.1}s)", total(&files), files.len(), kept.len(), t.elapsed().as_secs_f64());
    print_per_file(&files, &out);
    let m = &o.matching;
    println!(
        "  rules: exact after normalisation; near-duplicate Jaccard >= {} over {}-token shingles; templated masked Jaccard >= {}; LSH {} bands x {} rows",
        m.threshold, m.ngram, m.templated_threshold, m.bands, m.rows
    );
    write_outputs(&a.output, &kept, &out.report, &a.input.prompt_template)
}

fn run_decontaminate(a: &DecontaminateArgs) -> Result<()> {
    let t = Instant::now();
    let train = a.input.read(true)?;
    let eval_inputs = InputArgs { inputs: a.against.clone(), ..a.input.clone() };
    let eval = eval_inputs.read(true)?;
    let o = DecontaminateOptions {
        matching: a.matching.config()?,
        overlap: OverlapConfig { ngram: a.overlap_ngram, boilerplate_df: a.boilerplate_df, confirm: a.overlap_confirm },
        drop_templated: a.matching.drop_templated,
        report_declined: a.report_declined,
    };
    let pb = bar("decontaminate");
    let d = decontaminate(&train, &eval, &o, &pb);
    pb.finish_and_clear();
    let kept = d.outcome.kept(&train);
    println!(
        "decontaminate: {} training records against {} evaluation problems in {} files -> {} kept ({:.1}s)",
        total(&train),
        total(&eval),
        eval.len(),
        kept.len(),
        t.elapsed().as_secs_f64()
    );
    print_per_file(&train, &d.outcome);
    println!("  evaluation problems found in the training set (by their strongest match):");
    for l in &d.leaks {
        let found: usize = l.by_reason.values().sum();
        let parts: Vec<String> = l.by_reason.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
        let parts = if parts.is_empty() { "none".to_string() } else { parts.join(", ") };
        println!("    {}: {found} of {} ({parts})", l.file, l.problems);
    }
    let p = &d.pairs;
    println!(
        "  candidate pairs sharing a {}-gram: {} overlap confirmed; declined {} boilerplate-only ({} of them similar enough to be removed as overlap without the boilerplate discount) and {} dissimilar",
        o.overlap.ngram, p.overlap, p.boilerplate_only, p.boilerplate_only_similar, p.dissimilar
    );
    write_outputs(&a.output, &kept, &d.outcome.report, &a.input.prompt_template)
}

fn run_filter(a: &FilterArgs) -> Result<()> {
    let t = Instant::now();
    let files = a.input.read(false)?;
    let pb = bar("filter");
    let out = filter(&files, &RewardConfig::default(), &pb);
    pb.finish_and_clear();
    let kept = out.kept(&files);
    println!("filter: {} records in {} files -> {} kept ({:.1}s)", total(&files), files.len(), kept.len(), t.elapsed().as_secs_f64());
    print_per_file(&files, &out);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in &out.report {
        let kind = l.detail.as_deref().and_then(|d| d.split(':').next()).unwrap_or("?");
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  ungradable by cause: {}", if kinds.is_empty() { "none".into() } else { kinds.join(", ") });
    write_outputs(&a.output, &kept, &out.report, &a.input.prompt_template)
}

/// One line of length statistics; the share over the limit only when there is one.
fn print_lengths(what: &str, s: &LengthStats) {
    let over = if s.limit == usize::MAX {
        String::new()
    } else {
        format!("; over {}: {} ({:.2}%)", s.limit, s.over, 100.0 * s.over as f64 / s.count.max(1) as f64)
    };
    println!("  {what}: mean {:.0}, p50 {}, p90 {}, p99 {}, max {}{over}", s.mean, s.p50, s.p90, s.p99, s.max);
}

fn run_stats(a: &StatsArgs) -> Result<()> {
    let files = a.input.read(false)?;
    let items: Vec<&Item> = files.iter().flat_map(|f| &f.items).collect();
    println!("stats: {} records in {} files", items.len(), files.len());
    let (kinds, several) = answer_kinds(&items);
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  answer kinds: {}; {} records list several acceptable answers", kinds.join(", "), several);
    let chars: Vec<usize> = items.iter().map(|it| it.problem.chars().count()).collect();
    print_lengths("problem length in characters", &length_stats(&chars, usize::MAX));
    let Some(dir) = &a.tokenizer else {
        println!("  (no --tokenizer: prompt token lengths not computed)");
        return write_outputs(&a.output, &items, &[], &a.input.prompt_template);
    };
    let tok = TextTokenizer::load(dir)?;
    let chat = a.chat_template.unwrap_or_else(|| crate::eval::default_chat_template(&tok));
    let pb = bar("tokenizing");
    pb.set_length(items.len() as u64);
    let mut lens = Vec::with_capacity(items.len());
    for f in &files {
        let refs: Vec<&Item> = f.items.iter().collect();
        lens.extend(prompt_lengths(&refs, &tok, chat, &a.input.prompt_template).with_context(|| f.name())?);
        pb.inc(refs.len() as u64);
    }
    pb.finish_and_clear();
    print_lengths(&format!("prompt tokens ({} chat template)", chat_name(chat)), &length_stats(&lens, a.max_prompt_len));
    let mut report = Vec::new();
    let mut keep = Vec::new();
    let mut k = 0;
    for f in &files {
        for (i, it) in f.items.iter().enumerate() {
            if lens[k] > a.max_prompt_len {
                report.push(ReportLine {
                    file: f.name(),
                    index: i,
                    reason: Reason::TooLong,
                    action: Action::Removed,
                    match_file: None,
                    match_index: None,
                    similarity: None,
                    detail: Some(format!("{} prompt tokens > {}", lens[k], a.max_prompt_len)),
                });
            } else {
                keep.push(it);
            }
            k += 1;
        }
    }
    write_outputs(&a.output, &keep, &report, &a.input.prompt_template)
}

fn chat_name(c: ChatTemplate) -> &'static str {
    match c {
        ChatTemplate::Model => "the model's",
        ChatTemplate::R1Distill => "r1-distill",
        ChatTemplate::R1DistillThink => "r1-distill-think",
    }
}
