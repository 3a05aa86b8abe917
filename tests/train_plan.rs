//! The memory plan (`scalerl plan`, `train::plan`) on the real DeepSeek-R1-Distill-Qwen-1.5B
//! config.json (committed in tests/fixtures/r1-distill-1.5b-config/; shapes only, no weights)
//! under DeepScaleR's run config: the 24K stage fits in 80 GiB and not in 16; the figures add up.
use scalerl::model::ModelConfig;
use scalerl::train::config::RunConfig;
use scalerl::train::plan::{check, kv_bytes_per_token, plan};
use std::path::Path;

const GIB: u64 = 1 << 30;

fn setup() -> (ModelConfig, RunConfig) {
    let model = ModelConfig::from_file(Path::new("tests/fixtures/r1-distill-1.5b-config/config.json")).unwrap();
    let cfg = RunConfig::load(Path::new("configs/deepscaler-1.5b-8k-16k-24k.toml")).unwrap();
    (model, cfg)
}

#[test]
fn deepscaler_fits_in_80_gib_and_not_in_16() {
    let (model, cfg) = setup();
    let plans = check(&model, &cfg, 80 * GIB).unwrap();
    assert_eq!(plans.len(), 3);
    let last = &plans[2];
    assert_eq!((last.max_response_len, last.n, last.seq_tokens), (24576, 16, 24576 + 1024));
    // 28 KiB of KV a token (28 layers × 2 KV heads × 128 × K and V × bf16).
    assert_eq!(kv_bytes_per_token(&model), 28 * 1024);
    // The 1M-token cap of the config holds 40 sequences of 25,600 tokens; 80 GiB has room for more.
    assert_eq!((last.kv_tokens, last.seqs_at_once), (1 << 20, 40));
    assert!(last.kv_room_tokens > last.kv_tokens);
    assert!(last.update_peak < 80 * GIB && last.rollout_peak < 80 * GIB);
    // Resident: bf16 weights (2 bytes) + f32 master (4) + two f32 moments (8) + the bf16
    // reference (2) = 16 bytes a parameter (1.78 B of them), plus the fixed reserve.
    let params = scalerl::params::ParamTable::new(&model).total() as u64;
    let resident: u64 = last.resident.iter().map(|a| a.bytes).sum();
    assert_eq!(resident, 16 * params + GIB);

    let e = format!("{:#}", check(&model, &cfg, 16 * GIB).unwrap_err());
    assert!(e.contains("stage 0") && e.contains("does not fit on a 16 GiB device") && e.contains("more"), "{e}");
    assert!(e.contains("memory plan:") && e.contains("DOES NOT FIT"), "the refusal carries the plan: {e}");
}

#[test]
fn a_smaller_micro_batch_or_no_reference_needs_less() {
    let (model, cfg) = setup();
    let base = plan(&model, &cfg, 40 * GIB)[2].update_peak;
    let mut small = cfg.clone();
    small.optim.micro_batch_tokens = 8192;
    assert!(plan(&model, &small, 40 * GIB)[2].update_peak < base);
    let mut no_kl = cfg.clone();
    no_kl.loss.use_kl = false;
    let p = &plan(&model, &no_kl, 40 * GIB)[2];
    assert!(p.update_peak < base && p.resident.iter().all(|a| !a.what.contains("reference")));
}

/// `loss.reference = "host"`: the reference's 2 bytes a parameter leave the resident set (so
/// every phase's peak drops by them) and appear only in the log-prob phase, whose peak then
/// includes them and stays below the update's.
#[test]
fn a_host_reference_is_on_the_device_only_for_its_pass() {
    let (model, cfg) = setup();
    let params = scalerl::params::ParamTable::new(&model).total() as u64;
    let mut host = cfg.clone();
    host.loss.reference = scalerl::train::config::RefPlacement::Host;
    let (d, h) = (&plan(&model, &cfg, 80 * GIB)[2], &plan(&model, &host, 80 * GIB)[2]);
    let sum = |a: &[scalerl::train::plan::Alloc]| a.iter().map(|x| x.bytes).sum::<u64>();
    assert_eq!(sum(&d.resident) - sum(&h.resident), 2 * params);
    assert_eq!(d.update_peak - h.update_peak, 2 * params);
    assert_eq!(sum(&h.logprobs) - sum(&d.logprobs), 2 * params);
    assert_eq!(h.logprobs_peak, d.logprobs_peak);
    assert!(h.logprobs.iter().any(|a| a.what.contains("reference")) && d.logprobs.iter().all(|a| !a.what.contains("reference")));
    assert!(h.logprobs_peak < h.update_peak, "{} vs {}", h.logprobs_peak, h.update_peak);
    // The key reads from the config file, and a wrong value names it.
    let text = std::fs::read_to_string("configs/deepscaler-1.5b-8k-16k-24k.toml").unwrap();
    assert_eq!(RunConfig::from_toml_str(&text).unwrap().loss.reference, cfg.loss.reference);
    let with = text.replace("reference = \"device\"", "reference = \"host\"");
    assert_ne!(with, text, "the config documents loss.reference");
    assert_eq!(RunConfig::from_toml_str(&with).unwrap().loss.reference, host.loss.reference);
    let e = RunConfig::from_toml_str(&text.replace("reference = \"device\"", "reference = \"disk\"")).unwrap_err();
    assert!(format!("{e:#}").contains("loss.reference: unknown `disk` (expected device or host)"), "{e:#}");
}

#[test]
fn the_plan_command_prints_and_refuses() {
    let exe = env!("CARGO_BIN_EXE_scalerl");
    let dir = std::env::temp_dir().join(format!("scalerl-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string("configs/deepscaler-1.5b-8k-16k-24k.toml")
        .unwrap()
        .replace("model = \"../shared/models/DeepSeek-R1-Distill-Qwen-1.5B\"", "model = \"tests/fixtures/r1-distill-1.5b-config\"");
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, text).unwrap();
    let run = |gib: &str| std::process::Command::new(exe).args(["plan", "--config"]).arg(&cfg).args(["--gpu-mem-gib", gib]).output().unwrap();
    let ok = run("80");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.contains("stage 2: responses up to 24576 tokens, n = 16") && out.contains("KV cache") && out.contains("fits"), "{out}");
    let bad = run("16");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("stage 0") && err.contains("does not fit in 16 GiB"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
