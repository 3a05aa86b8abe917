//! Bad input to the CLI: one clear `error:` line naming what is wrong, a non-zero exit code,
//! and never a panic.
mod common;
use common::fixture;
use std::path::Path;
use std::process::Command;

fn scalerl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs `scalerl logits` on `dir` and checks it fails cleanly with a message containing `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let (code, _, err) = scalerl(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one error line, got {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: `{needle}` not in {err}");
}

/// A copy of the tiny Qwen2 fixture that a test may damage.
fn scratch_model(tag: &str) -> tempdir::Dir {
    let dir = tempdir::Dir::new(tag);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(fixture("tiny-qwen2").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

mod tempdir {
    /// A directory under the target dir, removed on drop.
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("scalerl-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_model_directory_and_files() {
    fails_with(&["logits", "--model", "/nonexistent/model", "--tokens", "1"], "/nonexistent/model");
    let d = scratch_model("missing");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "model.safetensors");
    let d = scratch_model("missing-cfg");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "config.json");
    let d = scratch_model("missing-tok");
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    fails_with(&["generate", "--model", s(d.path()), "--prompt", "hi"], "tokenizer.json");
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let d = scratch_model("trunc");
    let f = d.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "model.safetensors");
    std::fs::write(&f, &bytes[..5]).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "model.safetensors");
    // A header length far beyond the file, then a header that is not JSON.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&f, &bad).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "corrupt safetensors");
    let mut bad = bytes.clone();
    bad[8..16].copy_from_slice(b"#garbage");
    std::fs::write(&f, &bad).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "corrupt safetensors");
}

#[test]
fn wrong_shape_names_the_tensor() {
    let d = scratch_model("shape");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap();
    std::fs::write(d.path().join("config.json"), cfg.replace("\"intermediate_size\": 136", "\"intermediate_size\": 140")).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "model.layers.0.mlp.gate_proj.weight");
}

#[test]
fn missing_tensor_is_named() {
    // A Llama config over Qwen2 weights with attention_bias would expect the same tensors; instead
    // ask for one more layer than the file has.
    let d = scratch_model("layers");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap();
    std::fs::write(d.path().join("config.json"), cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "model.layers.2.input_layernorm.weight");
}

#[test]
fn unknown_architecture_is_named() {
    let d = scratch_model("arch");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap();
    std::fs::write(d.path().join("config.json"), cfg.replace("Qwen2ForCausalLM", "GPTNeoXForCausalLM")).unwrap();
    fails_with(&["logits", "--model", s(d.path()), "--tokens", "1"], "GPTNeoXForCausalLM");
}

#[test]
fn empty_and_too_long_prompts() {
    let m = fixture("tiny-qwen2");
    fails_with(&["generate", "--model", s(&m), "--prompt", ""], "empty");
    // max_position_embeddings of the fixture is 256.
    let long = "a b c d ".repeat(200);
    fails_with(&["generate", "--model", s(&m), "--prompt", &long, "--max-new-tokens", "4"], "exceeds the context");
    let many: Vec<String> = (0..300).map(|i| (i % 200).to_string()).collect();
    fails_with(&["logits", "--model", s(&m), "--tokens", &many.join(",")], "context");
    fails_with(&["logits", "--model", s(&m), "--tokens", "1,x"], "`x`");
    fails_with(&["logits", "--model", s(&m), "--tokens", "100000"], "outside the vocabulary");
}

#[test]
fn logits_command_prints_json() {
    let m = fixture("tiny-qwen2");
    let (code, out, err) = scalerl(&["logits", "--model", s(&m), "--tokens", "1,2,3", "--all-positions"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["logits"].as_array().unwrap().len(), 3);
    assert_eq!(v["logits"][2].as_array().unwrap().len(), 300);
}

#[test]
fn cuda_device_without_gpu_is_a_clear_error() {
    let m = fixture("tiny-qwen2");
    let (code, _, err) = scalerl(&["logits", "--model", s(&m), "--tokens", "1,2", "--device", "cuda"]);
    assert!(!err.contains("panicked"), "{err}");
    if code != 0 {
        // No GPU here (CI): one line that says so.
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains("GPU"), "{err}");
    }
}

/// Under a launcher with several processes, `train` is one rank of a multi-GPU run: on a CPU
/// config it refuses by name (ranks of CPU processes are not joined); a bad launcher variable
/// is named; on a GPU config without a GPU, the GPU is named.
#[test]
fn train_under_a_multi_process_launcher_refuses() {
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).args(["train", "--config", "configs/tiny-test.toml"]).envs(vars.iter().copied()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "localhost")]);
    assert!(code != 0 && err.contains("Torchrun launched 2 processes (this is rank 1): a multi-process run trains on GPUs"), "{err}");
    let (code, err) = run(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"), ("MASTER_ADDR", "localhost")]);
    assert!(code != 0 && err.contains("OpenMpi launched 2 processes"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--config", "configs/tiny-test.toml", "--device", "cuda"])
        .envs([("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "localhost")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !scalerl::device::cuda::driver_present() {
        assert!(!out.status.success() && err.contains("rank 1: GPU 1 (LOCAL_RANK)") && err.contains("no GPU"), "{err}");
    }
    let (code, err) = run(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "0")]);
    assert!(code != 0 && err.contains("MASTER_ADDR is not set"), "{err}");
}
