//! The files of an evaluation run in its output directory: `samples.jsonl` (every sample, one
//! JSON object a line, appended and flushed as problems finish; the resume point),
//! `results.json` and `results.csv` (the metrics per benchmark).
use super::metrics::{to_csv, BenchmarkResult, SampleRecord};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SAMPLES_FILE: &str = "samples.jsonl";
pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_CSV: &str = "results.csv";

/// Reads the samples of an earlier run. A missing file is an empty run; a last line that does
/// not parse (the run was killed while writing it) is ignored; any other bad line is an error.
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SampleRecord>(line) {
            Ok(r) => out.push(r),
            // The last line, or the last before a final empty one: cut off mid-write.
            Err(_) if lines[i + 1..].iter().all(|l| l.trim().is_empty()) => break,
            Err(e) => bail!("{}: line {}: not a sample record: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Appends samples to the JSONL file, one line each, flushed after every problem.
pub struct SampleWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl SampleWriter {
    /// Rewrites `path` with `keep` (the samples of finished problems, dropping partial problems
    /// and a truncated last line), then opens it for appending. The rewrite goes through a
    /// temporary file and a rename, so a kill here loses nothing.
    pub fn start(path: &Path, keep: &[SampleRecord]) -> Result<SampleWriter> {
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            for r in keep {
                serde_json::to_writer(&mut f, r)?;
                f.write_all(b"\n")?;
            }
            f.into_inner().map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(SampleWriter { file, path: path.to_path_buf() })
    }

    /// Appends the samples of one problem and flushes them.
    pub fn append(&mut self, samples: &[SampleRecord]) -> Result<()> {
        let mut buf = Vec::new();
        for r in samples {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

/// Writes `results.json` and `results.csv` into `dir`.
pub fn write_results(dir: &Path, results: &[BenchmarkResult]) -> Result<()> {
    let json = serde_json::to_string_pretty(results)? + "\n";
    let p = dir.join(RESULTS_JSON);
    std::fs::write(&p, json).with_context(|| format!("cannot write {}", p.display()))?;
    let p = dir.join(RESULTS_CSV);
    std::fs::write(&p, to_csv(results)).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}
