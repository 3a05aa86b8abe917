//! The run config: defaults are DeepScaleR's 8K stage, the example file parses and shows every
//! key, unknown keys are refused by name (with the file), stages are validated, `stage_at`
//! follows the schedule and the automatic switch, and the loss keys map onto `GrpoConfig`.
use scalerl::train::config::{AutoStage, RunConfig, SaveDtype, Stage, DEEPSCALER_PROMPT};
use scalerl::train::{GrpoConfig, LossAgg};
use std::path::Path;

const EXAMPLE: &str = "configs/deepscaler-1.5b-8k-16k-24k.toml";

#[test]
fn defaults_are_deepscalers_8k_stage() {
    let c = RunConfig::from_toml_str("").unwrap();
    assert_eq!(c.rollout.batch_prompts, 128);
    assert_eq!(c.stages(), vec![Stage { from_step: 0, max_response_len: 8192, n: 8 }]);
    assert_eq!(c.data.max_prompt_len, 1024);
    assert_eq!((c.rollout.temperature, c.rollout.top_p), (0.6, 1.0));
    assert_eq!((c.optim.lr, c.optim.weight_decay, c.optim.grad_clip), (1e-6, 0.01, 1.0));
    assert_eq!((c.optim.mini_batch_prompts, c.optim.ppo_epochs), (64, 1));
    assert_eq!(c.data.prompt_template, DEEPSCALER_PROMPT);
    assert_eq!(
        c.render_prompt("What is 1+1?"),
        "What is 1+1? Let's think step by step and output the final answer within \\boxed{}."
    );
    // The loss maps onto the GRPO defaults, the optimizer onto AdamW's.
    assert_eq!(c.grpo(&c.stages()[0]), GrpoConfig::default());
    assert_eq!(c.adamw(), scalerl::train::AdamWConfig::default());
}

#[test]
fn example_config_parses_and_sets_every_section() {
    let c = RunConfig::load(Path::new(EXAMPLE)).unwrap();
    assert_eq!(c.stages().iter().map(|s| (s.max_response_len, s.n)).collect::<Vec<_>>(), [(8192, 8), (16384, 16), (24576, 16)]);
    assert_eq!(c.auto_stage, Some(AutoStage { clip_ratio_threshold: 0.1, window: 20 }));
    assert_eq!(c.checkpoint.dtype, SaveDtype::Bf16);
    assert_eq!(c.validation.as_ref().unwrap().n, 16);
    assert_eq!(c.total_steps, Some(1750));
    // Apart from the keys marked [set] the example shows the defaults.
    let d = RunConfig::default();
    assert_eq!(c.optim.micro_batch_tokens, 32768);
    let optim = scalerl::train::config::OptimConfig { micro_batch_tokens: 0, ..c.optim.clone() };
    assert_eq!((&c.loss, &optim, &c.checkpoint), (&d.loss, &d.optim, &d.checkpoint));
    assert_eq!(c.device, scalerl::engine::Backend::Cuda(0));
    assert_eq!(c.data.prompt_template, d.data.prompt_template);
    // Every key of the config is shown in the example (commented-out optional ones count).
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let full = toml::to_string(&RunConfig { validation: Some(Default::default()), ..c.clone() }).unwrap();
    for line in full.lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            assert!(text.contains(&format!("{key} = ")), "example lacks key `{key}`");
        }
    }
    for key in ["clip_ratio_high", "clip_ratio_c", "loss_agg_norm", "max_response_len", "n"] {
        assert!(text.contains(&format!("# {key} = ")) || text.contains(&format!("\n{key} = ")), "{key}");
    }
}

#[test]
fn unknown_keys_are_refused_with_file_and_key() {
    let dir = std::env::temp_dir().join(format!("scalerl-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, key) in [
        ("seeed = 1\n", "seeed"),
        ("[optim]\nlearning_rate = 1e-6\n", "learning_rate"),
        ("[[stage]]\nfrom_step = 0\nmax_response_len = 8192\nn = 8\ntemp = 1\n", "temp"),
        ("[auto_stage]\nclip_ratio_threshold = 0.1\nwindow = 3\nwindw = 2\n", "windw"),
    ] {
        let p = dir.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let e = format!("{:#}", RunConfig::load(&p).unwrap_err());
        assert!(e.contains("bad.toml") && e.contains(key), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_values_are_refused_by_key() {
    for (text, want) in [
        ("[[stage]]\nfrom_step = 5\nmax_response_len = 8192\nn = 8\n", "stage[0].from_step"),
        (
            "[[stage]]\nfrom_step = 0\nmax_response_len = 8192\nn = 8\n[[stage]]\nfrom_step = 0\nmax_response_len = 16384\nn = 16\n",
            "stage[1].from_step",
        ),
        ("[rollout]\nn = 4\n[[stage]]\nfrom_step = 0\nmax_response_len = 8192\nn = 8\n", "rollout.n"),
        ("[loss]\nloss_agg = \"mean\"\n", "loss.loss_agg"),
        ("[data]\nchat_template = \"chatml\"\n", "data.chat_template"),
        ("[data]\nprompt_template = \"no placeholder\"\n", "data.prompt_template"),
        ("[optim]\nmini_batch_prompts = 48\n", "optim.mini_batch_prompts"),
        ("[checkpoint]\ndtype = \"fp8\"\n", "dtype"),
        ("[auto_stage]\nclip_ratio_threshold = 0.1\nwindow = 0\n", "auto_stage.window"),
        // the default 8K stage: 1024 prompt + 8192 response tokens cannot fit in 4096
        ("[rollout]\nmax_kv_tokens = 4096\n", "rollout.max_kv_tokens"),
    ] {
        let e = format!("{:#}", RunConfig::from_toml_str(text).unwrap_err());
        assert!(e.contains(want), "`{text}` gave: {e}");
    }
}

#[test]
fn loss_keys_map_onto_grpo_config() {
    let c = RunConfig::from_toml_str(
        "[loss]\nclip_ratio = 0.2\nclip_ratio_high = 0.28\nuse_kl = false\nentropy_coef = 0.0\nloss_agg = \"seq-mean-token-sum-norm\"\n[optim]\ngrad_clip = 0.0\nwarmup_steps = 10\n",
    )
    .unwrap();
    let st = Stage { from_step: 0, max_response_len: 16384, n: 16 };
    let g = c.grpo(&st);
    assert_eq!((g.clip_low, g.clip_high, g.kl_coef, g.entropy_coef), (0.2, 0.28, None, 0.0));
    assert_eq!(g.agg, LossAgg::SeqMeanTokenSumNorm { constant: 16384.0 });
    let c2 = RunConfig::from_toml_str("[loss]\nloss_agg = \"seq-mean-token-sum-norm\"\nloss_agg_norm = 4096.0\n").unwrap();
    assert_eq!(c2.grpo(&st).agg, LossAgg::SeqMeanTokenSumNorm { constant: 4096.0 });
    assert_eq!(g.dual_clip, None);
    let c3 = RunConfig::from_toml_str("[loss]\nclip_ratio_c = 3.0\n").unwrap();
    assert_eq!(c3.grpo(&st).dual_clip, Some(3.0));
    assert!(RunConfig::from_toml_str("[loss]\nclip_ratio_c = 0.5\n").is_err(), "a dual clip below 1 is refused");
    let a = c.adamw();
    assert_eq!((a.max_grad_norm, a.schedule.warmup_steps), (None, 10));
    for (k, v) in [("seq-mean-token-mean", LossAgg::SeqMeanTokenMean), ("seq-mean-token-sum", LossAgg::SeqMeanTokenSum)] {
        let c = RunConfig::from_toml_str(&format!("[loss]\nloss_agg = \"{k}\"\n")).unwrap();
        assert_eq!(c.grpo(&st).agg, v);
    }
}

fn staged(auto: Option<(f64, usize)>) -> RunConfig {
    let mut t = String::from(
        "[[stage]]\nfrom_step = 0\nmax_response_len = 8192\nn = 8\n[[stage]]\nfrom_step = 100\nmax_response_len = 16384\nn = 16\n[[stage]]\nfrom_step = 200\nmax_response_len = 24576\nn = 16\n",
    );
    if let Some((th, w)) = auto {
        t += &format!("[auto_stage]\nclip_ratio_threshold = {th}\nwindow = {w}\n");
    }
    RunConfig::from_toml_str(&t).unwrap()
}

#[test]
fn stage_at_follows_the_schedule() {
    let c = staged(None);
    let lens = |s| c.stage_at(s, &[]).max_response_len;
    assert_eq!([lens(0), lens(99), lens(100), lens(199), lens(200), lens(10_000)], [8192, 8192, 16384, 16384, 24576, 24576]);
    assert_eq!(c.stage_at(150, &[]).n, 16);
    // Without [auto_stage] the history does not matter.
    assert_eq!(c.stage_index_at(50, &[1.0; 50]), 0);
}

#[test]
fn stage_at_switches_early_when_clipping_stays_high() {
    let c = staged(Some((0.1, 3)));
    // Steps 10, 11, 12 above the threshold: step 13 runs in stage 1.
    let mut h = vec![0.0; 40];
    h[10..13].fill(0.2);
    assert_eq!(c.stage_index_at(12, &h), 0);
    assert_eq!(c.stage_index_at(13, &h), 1);
    assert_eq!(c.stage_index_at(99, &h), 1);
    // Two high steps then a dip: no switch (the window must be unbroken).
    let mut h2 = vec![0.0; 40];
    h2[10..12].fill(0.2);
    h2[13..15].fill(0.2);
    assert_eq!(c.stage_index_at(39, &h2), 0);
    // Equal to the threshold is not above it.
    assert_eq!(c.stage_index_at(39, &[0.1; 40]), 0);
    // High from the start: a stage every window steps, never past the last.
    let h3 = vec![0.5; 20];
    assert_eq!((0..12).map(|s| c.stage_index_at(s, &h3)).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    // The window counts only steps of the current stage: the schedule's switch at 100 resets it.
    let mut h4 = vec![0.0; 200];
    h4[98..103].fill(0.5);
    assert_eq!(c.stage_index_at(101, &h4), 1);
    assert_eq!(c.stage_index_at(102, &h4), 1);
    assert_eq!(c.stage_index_at(103, &h4), 2);
    // Missing history counts as below the threshold; the fixed schedule still applies.
    assert_eq!(c.stage_index_at(150, &[]), 1);
}
