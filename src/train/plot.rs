//! `scalerl plot RUN_DIR`: PNG charts of a run's `metrics.jsonl`, the DeepScaleR blog's
//! figures: training reward, response length (all, correct, incorrect), clip
//! ratio (share of responses cut at the budget), and validation pass@1 when the run validated.
//! Stage switches (context lengthening) are dashed vertical lines labelled with the new budget;
//! long runs get a moving average over their noisy per-step values.
//!
//! Text is drawn with the embedded DejaVu Sans (assets/fonts, Bitstream Vera licence) through
//! plotters' ab_glyph backend, so the charts need no system fonts.

use super::metrics::{read_metrics, StepMetrics, METRICS_FILE};
use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 540);
const COLORS: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189)];

/// One line of a chart: a name and its (step, value) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn series(name: &str, recs: &[StepMetrics], f: impl Fn(&StepMetrics) -> Option<f64>) -> Series {
    Series { name: name.to_string(), points: recs.iter().filter_map(|r| f(r).map(|v| (r.step as f64, v))).collect() }
}

/// Series of at least this many points get a moving average over 1/30 of their length.
const SMOOTH_FROM: usize = 60;

/// Trailing mean over a window of `len / 30` points (at least 5).
fn moving_average(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let w = (points.len() / 30).max(5);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= w {
                sum -= points[i - w].1;
            }
            (x, sum / (i + 1).min(w) as f64)
        })
        .collect()
}

/// Steps where a new stage begins, with its label.
pub fn stage_switches(recs: &[StepMetrics]) -> Vec<(f64, String)> {
    recs.windows(2)
        .filter(|w| w[1].stage != w[0].stage)
        .map(|w| (w[1].step as f64, format!(" stage {}: {} tokens, n {}", w[1].stage, w[1].max_response_len, w[1].n)))
        .collect()
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if !ok {
        bail!("the embedded font is not a valid TrueType font");
    }
    Ok(())
}

/// Draws one line chart into `path`.
fn line_chart(path: &Path, title: &str, y_label: &str, lines: &[Series], switches: &[(f64, String)]) -> Result<()> {
    let pts = lines.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        bail!("{title}: nothing to plot");
    }
    // A flat or single-point series still gets a visible range.
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3 * y1.abs().max(1.0));
    let (y0, y1) = (y0 - pad, y1 + pad);
    let draw_err = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(RGBColor(238, 238, 238))
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| draw_err(&e))?;
    for (x, label) in switches {
        let x = *x;
        let dashes = (0..40).map(|i| {
            let a = y0 + (y1 - y0) * i as f64 / 40.0;
            PathElement::new(vec![(x, a), (x, a + (y1 - y0) / 80.0)], BLACK.mix(0.6))
        });
        chart.draw_series(dashes).map_err(|e| draw_err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (x, y1 - (y1 - y0) * 0.02),
                ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
            )))
            .map_err(|e| draw_err(&e))?;
    }
    for (i, s) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let drawn = if s.points.len() == 1 {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
        } else if s.points.len() >= SMOOTH_FROM {
            // Per-step values of long runs are noisy: faint raw line, bold moving average.
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.mix(0.25).stroke_width(1)))
                .map_err(|e| draw_err(&e))?;
            chart.draw_series(LineSeries::new(moving_average(&s.points), color.stroke_width(2)))
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
        }
        .map_err(|e| draw_err(&e))?;
        drawn.label(s.name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

/// Writes the charts of `run_dir/metrics.jsonl` into `out_dir` (default `run_dir/plots`) and
/// returns their paths.
pub fn plot_run(run_dir: &Path, out_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let metrics = run_dir.join(METRICS_FILE);
    if !metrics.exists() {
        bail!("{}: no {METRICS_FILE} (is this a training run directory?)", run_dir.display());
    }
    let (recs, _truncated) = read_metrics(&metrics)?;
    if recs.is_empty() {
        bail!("{}: no steps logged yet", metrics.display());
    }
    register_font()?;
    let out = out_dir.map(Path::to_path_buf).unwrap_or_else(|| run_dir.join("plots"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let sw = stage_switches(&recs);
    let mut written = Vec::new();
    let mut chart = |file: &str, title: &str, y: &str, lines: Vec<Series>| -> Result<()> {
        let p = out.join(file);
        line_chart(&p, title, y, &lines, &sw)?;
        written.push(p);
        Ok(())
    };
    chart(
        "reward.png",
        "Training reward",
        "mean reward over the step's samples",
        vec![series("reward", &recs, |r| Some(r.reward_mean))],
    )?;
    chart(
        "response_length.png",
        "Response length",
        "tokens",
        vec![
            series("all", &recs, |r| Some(r.response_len.all)),
            series("correct", &recs, |r| r.response_len.correct),
            series("incorrect", &recs, |r| r.response_len.incorrect),
        ],
    )?;
    chart("clip_ratio.png", "Responses cut at the budget", "share", vec![series("clip ratio", &recs, |r| Some(r.clip_ratio))])?;
    let mut benchmarks: Vec<&str> = recs.iter().flat_map(|r| r.validation.iter().map(|v| v.benchmark.as_str())).collect();
    benchmarks.sort_unstable();
    benchmarks.dedup();
    if !benchmarks.is_empty() {
        let lines = benchmarks
            .iter()
            .map(|b| Series {
                name: b.to_string(),
                points: recs
                    .iter()
                    .flat_map(|r| &r.validation)
                    .filter(|v| v.benchmark == *b)
                    .map(|v| (v.after_steps as f64, v.pass_at_1))
                    .collect(),
            })
            .collect();
        chart("validation.png", "Validation pass@1", "pass@1", lines)?;
    }
    Ok(written)
}
