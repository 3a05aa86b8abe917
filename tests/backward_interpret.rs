//! Interpret-mode parity of the backward and optimizer kernels (issue 13) against the CPU
//! reference, on every thread schedule, and the layer chains they make up:
//!
//! - every kernel: tests/common/backward_cases.rs (random inputs, ragged shapes, poisoned or
//!   random-start outputs, unaligned views), and every reduction (bias and RMSNorm weight
//!   gradients, embedding gradient, Σ g²) bit-identical across the four schedules;
//! - AdamW on the device against `train::adamw::AdamW` on the CPU for three steps (clipping on
//!   and off) and a skipped non-finite step, and the bf16 cast of the master weights;
//! - the MLP half of a fixture layer's backward through `CudaOps` against `CpuOps`;
//! - the whole fixture model's backward with every op on the device path except attention,
//!   which runs the CPU reference on the device's bf16 q/k/v (its kernels are another engineer's
//!   part of issue 13): every parameter's gradient within a bf16 tolerance of the CPU backend,
//!   and two runs bit-identical.
//! CI also runs this file under AddressSanitizer (scripts/test.sh).
#[path = "common/backward_cases.rs"]
mod backward_cases;
mod common;
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
use anyhow::{bail, Result};
use backward_cases::*;
use half::bf16;
use scalerl::device::{Buffer, DType, Device, Schedule};
use scalerl::model::{Model, ModelConfig, Save, SeqChunk, Transformer};
use scalerl::ops::cpu::{CpuBatch, CpuOps};
use scalerl::ops::cuda::{AttentionPlan, CudaBatch, CudaOps, DeviceKvCache, DeviceParams, TokenMeta};
use scalerl::ops::{AdamWStep, Draw, LogProbShape, Ops, Sampled, TokenLogProbs};
use scalerl::params::{HostParams, Kind, ParamId, ParamTable};
use scalerl::train::{AdamW, AdamWConfig, LrSchedule};
use std::sync::Arc;

const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

fn on_every_schedule(case: fn(&Device)) {
    for schedule in SCHEDULES {
        case(&Device::Interpret { schedule });
    }
}

/// Runs a reduction case on every schedule: the bits must not depend on it.
fn deterministic_on_every_schedule(name: &str, case: fn(&Device) -> Vec<Vec<u32>>) {
    let first = case(&Device::Interpret { schedule: SCHEDULES[0] });
    for schedule in &SCHEDULES[1..] {
        let again = case(&Device::Interpret { schedule: *schedule });
        assert!(again == first, "{name}: the bits differ between {:?} and {schedule:?}", SCHEDULES[0]);
    }
    // And run to run on one schedule.
    assert!(case(&Device::interpret()) == first, "{name}: two runs differ");
    println!("{name}: bit-identical on {} schedules and across runs", SCHEDULES.len());
}

#[test]
fn every_backward_kernel_is_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    for n in [
        "add_bf16",
        "add_bias_bf16",
        "silu_mul_backward_bf16",
        "rope_qk_backward_bf16",
        "colsum_bf16_partial",
        "colsum_f32_acc",
        "rmsnorm_backward_bf16",
        "embedding_backward_bf16",
        "adamw_f32",
        "scale_f32",
        "sum_squares_f32_partial",
        "sum_squares_f64_final",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn add_and_add_bias_match_cpu() {
    on_every_schedule(add_cases);
}

#[test]
fn swiglu_backward_matches_cpu() {
    on_every_schedule(swiglu_backward_cases);
}

#[test]
fn rope_backward_matches_cpu() {
    on_every_schedule(rope_backward_cases);
}

#[test]
fn bias_backward_matches_cpu_and_is_deterministic() {
    deterministic_on_every_schedule("bias_backward", bias_backward_cases);
}

#[test]
fn rmsnorm_backward_matches_cpu_and_is_deterministic() {
    deterministic_on_every_schedule("rmsnorm_backward", rmsnorm_backward_cases);
}

#[test]
fn embedding_backward_is_bit_identical_to_cpu() {
    deterministic_on_every_schedule("embedding_backward", embedding_backward_cases);
}

#[test]
fn adamw_scale_and_sum_squares_match_cpu() {
    deterministic_on_every_schedule("sum_squares", adamw_cases);
}

#[test]
fn master_to_bf16_cast_rounds_like_half() {
    on_every_schedule(master_cast_cases);
}

#[test]
fn backward_gemms_match_cpu() {
    gemm_backward_cases(&Device::interpret());
}

#[test]
fn backward_launchers_refuse_wrong_buffers() {
    backward_launch_error_cases(&Device::interpret());
}

// ---- AdamW: the device optimizer against the CPU one ------------------------------------------

fn fixture_model() -> Model {
    Model::load(&common::fixture("tiny-qwen2")).unwrap()
}

fn random_params(table: &Arc<ParamTable>, seed: u64, scale: f32) -> HostParams {
    HostParams::from_flat(table, random_f32(table.total(), seed, scale)).unwrap()
}

/// Three AdamW steps of `train::adamw::AdamW` over the fixture model's flat buffer (88K
/// parameters), CpuOps against CudaOps in interpret mode, with the gradient norm above the clip
/// (steps 1 and 3) and below it (step 2), then a NaN gradient that both must skip. Tolerance:
/// f32 math on both sides in the same order, ≤ 1e-6 relative per element (the only difference
/// can come from the f64 norm's summation order through the f32 clip coefficient); the bf16
/// copy cast from the device master equals half's rounding of it bit for bit.
#[test]
fn adamw_steps_match_the_cpu_optimizer() {
    let model = fixture_model();
    let table = model.table().clone();
    let (cpu, cuda) = (CpuOps, CudaOps::new(Device::interpret()));
    let cfg = AdamWConfig { schedule: LrSchedule { lr: 1e-3, warmup_steps: 2, zero_first_step: false }, ..Default::default() };
    let mut opt_c = AdamW::new(cfg, &cpu, &table).unwrap();
    let mut opt_d = AdamW::new(cfg, &cuda, &table).unwrap();
    let mut wc = model.weights.clone();
    let mut wd = DeviceParams::upload_f32(&cuda.dev, &model.weights).unwrap();
    assert_eq!(wd.dtype(), DType::F32);
    let bf16_copy = DeviceParams::upload(&cuda.dev, &model.weights).unwrap();
    for (step, scale) in [(0usize, 0.05f32), (1, 1e-4), (2, 0.2), (3, f32::NAN)] {
        let mut gc = random_params(&table, 100 + step as u64, if scale.is_nan() { 0.01 } else { scale });
        if scale.is_nan() {
            gc.flat_mut()[777] = f32::NAN;
        }
        let mut gd = DeviceParams::upload_f32(&cuda.dev, &gc).unwrap();
        let before = wd.download(&cuda.dev).unwrap();
        let rc = opt_c.step(&cpu, &mut wc, &mut gc).unwrap();
        let rd = opt_d.step(&cuda, &mut wd, &mut gd).unwrap();
        assert_eq!(rc.skipped, rd.skipped, "step {step}");
        assert_eq!(rc.lr, rd.lr);
        let after = wd.download(&cuda.dev).unwrap();
        if rc.skipped {
            assert!(!rd.grad_norm.is_finite(), "step {step}: {}", rd.grad_norm);
            assert_eq!(after.flat().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), before.flat().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "a skipped step changed the weights");
            println!("step {step}: non-finite gradient, skipped on both");
            continue;
        }
        let norm_rel = (rd.grad_norm - rc.grad_norm).abs() / rc.grad_norm;
        assert!(norm_rel <= 1e-12, "step {step}: grad norm {} vs {}", rd.grad_norm, rc.grad_norm);
        // The clipped gradients, then the weights.
        let gd_host = gd.download(&cuda.dev).unwrap();
        let (mut worst, mut differ) = (0f64, 0usize);
        for (name, got, want) in [("gradients", gd_host.flat(), gc.flat()), ("weights", after.flat(), wc.flat())] {
            for (a, b) in got.iter().zip(want) {
                if a.to_bits() != b.to_bits() {
                    differ += 1;
                    let rel = ((a - b).abs() / b.abs().max(1e-30)) as f64;
                    assert!(rel <= 1e-6, "step {step} {name}: {a} vs {b}");
                    worst = worst.max(rel);
                }
            }
        }
        println!(
            "step {step}: grad norm {:.4} ({}clipped), norm rel diff {norm_rel:.1e}; gradients + weights: {differ} of {} elements not bit-identical, max rel diff {worst:.1e}",
            rc.grad_norm,
            if rc.grad_norm > 1.0 { "" } else { "not " },
            2 * table.total()
        );
        // The rollout's bf16 copy, cast from the master on the device.
        bf16_copy.cast_from(&cuda.dev, &wd).unwrap();
        let got: Vec<bf16> = dev_bf16(&cuda.dev, bf16_copy.flat());
        let want: Vec<bf16> = after.flat().iter().map(|&v| bf16::from_f32(v)).collect();
        assert_eq!(got, want, "step {step}: the bf16 copy is not bf16(master)");
    }
    assert_eq!((opt_c.steps, opt_c.updates), (opt_d.steps, opt_d.updates));
    // A bf16 set is not a master copy.
    let mut g = cuda.zeros_params(&table).unwrap();
    let mut w16 = DeviceParams::upload(&cuda.dev, &model.weights).unwrap();
    let e = opt_d.step(&cuda, &mut w16, &mut g).err().unwrap().to_string();
    assert!(e.contains("bf16") && e.contains("master"), "{e}");
}

fn dev_bf16(dev: &Device, b: &Buffer) -> Vec<bf16> {
    dev.download::<bf16>(b).unwrap()
}

// ---- layer chains ------------------------------------------------------------------------------

/// The fixture model with its weights rounded to bf16 (what the device holds), so that the CPU
/// reference and the device differ only by the bf16 activations.
fn bf16_rounded(model: &Model) -> Model {
    let mut w = model.weights.clone();
    w.flat_mut().iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
    Model::from_weights(model.config.clone(), w).unwrap()
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite(), "non-finite value {x}");
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// The MLP half of layer `l`'s forward and backward, as `Transformer::layer_forward` and
/// `layer_backward` run it, on any backend: from the mid-layer residual `x_mid` and the
/// gradient `dout` of the layer output, returns ∂L/∂x_mid and the four weight gradients.
fn mlp_chain<O: Ops>(o: &O, w: &O::Params, table: &Arc<ParamTable>, c: &ModelConfig, l: usize, x_mid: &[f32], dout: &[f32], t: usize) -> Result<(Vec<f32>, HostParams)>
where
    O::Params: GradsToHost<O>,
{
    let (h, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
    let id = |k: Kind| table.layer(k, l);
    // Forward (the residual add is the identity for the gradient: start from x_mid).
    let mut res = o.upload(x_mid)?;
    let mut n2 = o.zeros(t * h)?;
    o.add_rmsnorm(&mut res, None, o.param(w, id(Kind::PostNorm)), &mut n2, t, h, eps)?;
    let (mut gate, mut up, mut act) = (o.zeros(t * inter)?, o.zeros(t * inter)?, o.zeros(t * inter)?);
    o.linear(&n2, o.param(w, id(Kind::GateProj)), &mut gate, t, inter, h)?;
    o.linear(&n2, o.param(w, id(Kind::UpProj)), &mut up, t, inter, h)?;
    o.swiglu(&gate, &up, &mut act, t * inter)?;
    // Backward, the op sequence of Transformer::layer_backward's MLP half.
    let mut g = o.zeros_params(table)?;
    let mut dx = o.upload(dout)?;
    let mut d_act = o.zeros(t * inter)?;
    o.linear_backward_input(&dx, o.param(w, id(Kind::DownProj)), &mut d_act, t, h, inter)?;
    o.linear_backward_weight(&dx, &act, o.param_mut(&mut g, id(Kind::DownProj)), t, h, inter)?;
    let (mut d_gate, mut d_up) = (o.zeros(t * inter)?, o.zeros(t * inter)?);
    o.swiglu_backward(&gate, &up, &d_act, &mut d_gate, &mut d_up, t * inter)?;
    o.linear_backward_weight(&d_gate, &n2, o.param_mut(&mut g, id(Kind::GateProj)), t, inter, h)?;
    o.linear_backward_weight(&d_up, &n2, o.param_mut(&mut g, id(Kind::UpProj)), t, inter, h)?;
    let (mut d_n2, mut tmp) = (o.zeros(t * h)?, o.zeros(t * h)?);
    o.linear_backward_input(&d_gate, o.param(w, id(Kind::GateProj)), &mut d_n2, t, inter, h)?;
    o.linear_backward_input(&d_up, o.param(w, id(Kind::UpProj)), &mut tmp, t, inter, h)?;
    o.add(&mut d_n2, &tmp)?;
    o.rmsnorm_backward(&res, o.param(w, id(Kind::PostNorm)), &d_n2, &mut tmp, o.param_mut(&mut g, id(Kind::PostNorm)), t, h, eps)?;
    o.add(&mut dx, &tmp)?;
    Ok((o.download(&dx)?, g.to_host(o)?))
}

/// Gradient sets back on the host, whatever the backend.
trait GradsToHost<O: Ops> {
    fn to_host(&self, o: &O) -> Result<HostParams>;
}
impl GradsToHost<CpuOps> for HostParams {
    fn to_host(&self, _: &CpuOps) -> Result<HostParams> {
        Ok(self.clone())
    }
}
impl GradsToHost<CudaOps> for DeviceParams {
    fn to_host(&self, o: &CudaOps) -> Result<HostParams> {
        self.download(&o.dev)
    }
}
impl GradsToHost<HybridOps> for DeviceParams {
    fn to_host(&self, o: &HybridOps) -> Result<HostParams> {
        self.download(&o.cuda.dev)
    }
}

/// bf16 tolerance of a gradient chain: ‖err‖/‖ref‖ per tensor (bf16 activations carry 2⁻⁹
/// relative rounding per op, and the fixture model's forward alone ends ~1% off the f32 one).
const CHAIN_TOL: f64 = 3e-2;
/// The k bias gradient is a sum over keys that nearly cancels (softmax ignores a common offset of
/// the keys; only RoPE's rotation of the bias keeps it from cancelling exactly), so bf16 errors
/// in the dk rows weigh more against its small norm.
const K_BIAS_TOL: f64 = 1e-1;

fn grad_tol(name: &str) -> f64 {
    if name.ends_with("k_proj.bias") { K_BIAS_TOL } else { CHAIN_TOL }
}

#[test]
fn mlp_half_of_a_layer_backward_matches_cpu() {
    let model = bf16_rounded(&fixture_model());
    let (c, table) = (model.config.clone(), model.table().clone());
    let t = 37;
    let x_mid: Vec<f32> = kernel_cases::to_f32(&kernel_cases::random_bf16(t * c.hidden_size, 1, 2.0));
    let dout: Vec<f32> = kernel_cases::to_f32(&kernel_cases::random_bf16(t * c.hidden_size, 2, 1.0));
    let (dx_c, g_c) = mlp_chain(&CpuOps, &model.weights, &table, &c, 1, &x_mid, &dout, t).unwrap();
    let cuda = CudaOps::new(Device::Interpret { schedule: Schedule::Random(3) });
    let w = DeviceParams::upload(&cuda.dev, &model.weights).unwrap();
    let (dx_d, g_d) = mlp_chain(&cuda, &w, &table, &c, 1, &x_mid, &dout, t).unwrap();
    let e = rel_l2(&dx_d, &dx_c);
    println!("MLP half, layer 1, {t} rows: d x_mid rel err {e:.2e}");
    assert!(e <= CHAIN_TOL, "d x_mid: {e}");
    for k in [Kind::DownProj, Kind::GateProj, Kind::UpProj, Kind::PostNorm] {
        let id = table.layer(k, 1);
        let e = rel_l2(g_d.get(id), g_c.get(id));
        println!("  {:?} gradient rel err {e:.2e}", k);
        assert!(e <= CHAIN_TOL, "{k:?}: {e}");
    }
    // Nothing else was written.
    for (i, (e, v)) in g_d.iter().enumerate() {
        if ![Kind::DownProj, Kind::GateProj, Kind::UpProj, Kind::PostNorm].contains(&e.kind) || e.layer != Some(1) {
            assert!(v.iter().all(|&x| x == 0.0), "tensor {i} ({}) was written", e.name);
        }
    }
}

// ---- the whole model: CudaOps with the attention on the CPU -----------------------------------

/// `CudaOps` with packed attention (forward and backward) computed by the CPU reference from the
/// device's bf16 q, k, v: until the packed-attention kernels land, this runs the one
/// transformer's training forward and backward with every other op on the device path.
#[derive(Clone)]
struct HybridOps {
    cuda: CudaOps,
    cpu: CpuOps,
}

struct HybridBatch {
    cuda: CudaBatch,
    cpu: CpuBatch,
}

impl HybridOps {
    fn down(&self, t: &Buffer) -> Result<Vec<f32>> {
        self.cuda.download(t)
    }
    fn put(&self, dst: &Buffer, v: &[f32]) -> Result<()> {
        let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        self.cuda.dev.write(dst, &b)
    }
}

impl Ops for HybridOps {
    type Tensor = Buffer;
    type Params = DeviceParams;
    type Param = Buffer;
    type Cache = DeviceKvCache;
    type Batch = HybridBatch;

    fn name(&self) -> String {
        format!("{} + CPU attention", self.cuda.name())
    }
    fn zeros(&self, n: usize) -> Result<Buffer> {
        self.cuda.zeros(n)
    }
    fn upload(&self, v: &[f32]) -> Result<Buffer> {
        self.cuda.upload(v)
    }
    fn download(&self, t: &Buffer) -> Result<Vec<f32>> {
        self.cuda.download(t)
    }
    fn copy(&self, t: &Buffer) -> Result<Buffer> {
        self.cuda.copy(t)
    }
    fn param<'a>(&self, p: &'a DeviceParams, id: ParamId) -> &'a Buffer {
        self.cuda.param(p, id)
    }
    fn param_mut<'a>(&self, p: &'a mut DeviceParams, id: ParamId) -> &'a mut Buffer {
        self.cuda.param_mut(p, id)
    }
    fn zeros_params(&self, table: &Arc<ParamTable>) -> Result<DeviceParams> {
        self.cuda.zeros_params(table)
    }
    fn new_cache(&self, c: &ModelConfig, nb: usize, bs: usize) -> Result<DeviceKvCache> {
        self.cuda.new_cache(c, nb, bs)
    }
    fn paged_batch(&self, _c: &ModelConfig, _cache: &DeviceKvCache, _chunks: &[SeqChunk]) -> Result<HybridBatch> {
        bail!("HybridOps: training only")
    }
    fn packed_batch(&self, c: &ModelConfig, seqs: &[&[u32]]) -> Result<HybridBatch> {
        let dev = &self.cuda.dev;
        let cpu = self.cpu.packed_batch(c, seqs)?;
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        let table = [0u32];
        let spec: Vec<(usize, usize, &[u32])> = seqs.iter().map(|s| (0, s.len(), &table[..])).collect();
        let meta = TokenMeta::upload(dev, &spec, longest)?;
        let attention = AttentionPlan::new(dev, &meta, c.num_heads, c.num_kv_heads, c.head_dim)?;
        let ids: Vec<i32> = seqs.iter().flat_map(|s| s.iter().map(|&t| t as i32)).collect();
        Ok(HybridBatch { cuda: CudaBatch { ids: dev.upload(&ids)?, meta, attention, packed: None }, cpu })
    }
    fn embed(&self, b: &HybridBatch, table: &Buffer, out: &mut Buffer, c: &ModelConfig) -> Result<()> {
        self.cuda.embed(&b.cuda, table, out, c)
    }
    fn add_rmsnorm(&self, res: &mut Buffer, x: Option<&Buffer>, w: &Buffer, out: &mut Buffer, rows: usize, h: usize, eps: f32) -> Result<()> {
        self.cuda.add_rmsnorm(res, x, w, out, rows, h, eps)
    }
    fn linear(&self, x: &Buffer, w: &Buffer, y: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.cuda.linear(x, w, y, m, n, k)
    }
    fn add_bias(&self, y: &mut Buffer, b: &Buffer, rows: usize, n: usize) -> Result<()> {
        self.cuda.add_bias(y, b, rows, n)
    }
    fn rope_qk(&self, b: &HybridBatch, q: &mut Buffer, k: &mut Buffer, qb: Option<&Buffer>, kb: Option<&Buffer>, c: &ModelConfig) -> Result<()> {
        self.cuda.rope_qk(&b.cuda, q, k, qb, kb, c)
    }
    fn kv_write(&self, _b: &HybridBatch, _cache: &mut DeviceKvCache, _l: usize, _k: &Buffer, _v: &Buffer, _vb: Option<&Buffer>, _c: &ModelConfig) -> Result<()> {
        bail!("HybridOps: training only")
    }
    fn attention_paged(&self, _b: &HybridBatch, _cache: &DeviceKvCache, _l: usize, _q: &Buffer, _out: &mut Buffer, _c: &ModelConfig) -> Result<()> {
        bail!("HybridOps: training only")
    }
    fn attention_packed(&self, b: &HybridBatch, q: &Buffer, k: &Buffer, v: &Buffer, out: &mut Buffer, lse: &mut Buffer, c: &ModelConfig) -> Result<()> {
        let (q, k, v) = (self.down(q)?, self.down(k)?, self.down(v)?);
        let (mut o, mut l) = (vec![0f32; q.len()], vec![0f32; b.cuda.meta.tokens * c.num_heads]);
        self.cpu.attention_packed(&b.cpu, &q, &k, &v, &mut o, &mut l, c)?;
        self.put(out, &o)?;
        self.put(lse, &l)
    }
    fn swiglu(&self, gate: &Buffer, up: &Buffer, out: &mut Buffer, n: usize) -> Result<()> {
        self.cuda.swiglu(gate, up, out, n)
    }
    fn needs_master(&self) -> bool {
        self.cuda.needs_master()
    }
    fn params_from_host(&self, h: &HostParams, master: bool) -> Result<DeviceParams> {
        self.cuda.params_from_host(h, master)
    }
    fn params_to_host(&self, p: &DeviceParams) -> Result<HostParams> {
        self.cuda.params_to_host(p)
    }
    fn sync_weights(&self, master: &DeviceParams, weights: &mut DeviceParams) -> Result<()> {
        self.cuda.sync_weights(master, weights)
    }
    fn logits(&self, _h: &Buffer, _rows: &[usize], _lm: &Buffer, _c: &ModelConfig) -> Result<Vec<f32>> {
        bail!("HybridOps: no logits")
    }
    fn sample(&self, _h: &Buffer, _rows: &[usize], _lm: &Buffer, _c: &ModelConfig, _d: &[Draw]) -> Result<Vec<Sampled>> {
        bail!("HybridOps: no sampling")
    }
    fn add(&self, x: &mut Buffer, y: &Buffer) -> Result<()> {
        self.cuda.add(x, y)
    }
    fn linear_backward_input(&self, dy: &Buffer, w: &Buffer, dx: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.cuda.linear_backward_input(dy, w, dx, m, n, k)
    }
    fn linear_backward_weight(&self, dy: &Buffer, x: &Buffer, dw: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.cuda.linear_backward_weight(dy, x, dw, m, n, k)
    }
    fn bias_backward(&self, dy: &Buffer, db: &mut Buffer, rows: usize, n: usize) -> Result<()> {
        self.cuda.bias_backward(dy, db, rows, n)
    }
    fn rmsnorm_backward(&self, x: &Buffer, w: &Buffer, dy: &Buffer, dx: &mut Buffer, dw: &mut Buffer, rows: usize, h: usize, eps: f32) -> Result<()> {
        self.cuda.rmsnorm_backward(x, w, dy, dx, dw, rows, h, eps)
    }
    fn rope_backward(&self, b: &HybridBatch, dq: &mut Buffer, dk: &mut Buffer, c: &ModelConfig) -> Result<()> {
        self.cuda.rope_backward(&b.cuda, dq, dk, c)
    }
    fn swiglu_backward(&self, gate: &Buffer, up: &Buffer, dy: &Buffer, dg: &mut Buffer, du: &mut Buffer, n: usize) -> Result<()> {
        self.cuda.swiglu_backward(gate, up, dy, dg, du, n)
    }
    /// The CPU reference from the device's bf16 q, k, v and dout; its forward is recomputed in
    /// f32 for the output and LSE the backward needs.
    fn attention_packed_backward(
        &self,
        b: &HybridBatch,
        q: &Buffer,
        k: &Buffer,
        v: &Buffer,
        _out: &Buffer,
        _lse: &Buffer,
        dout: &Buffer,
        dq: &mut Buffer,
        dk: &mut Buffer,
        dv: &mut Buffer,
        c: &ModelConfig,
    ) -> Result<()> {
        let (q, k, v, dout) = (self.down(q)?, self.down(k)?, self.down(v)?, self.down(dout)?);
        let (mut o, mut l) = (vec![0f32; q.len()], vec![0f32; b.cuda.meta.tokens * c.num_heads]);
        self.cpu.attention_packed(&b.cpu, &q, &k, &v, &mut o, &mut l, c)?;
        let (mut gq, mut gk, mut gv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
        self.cpu.attention_packed_backward(&b.cpu, &q, &k, &v, &o, &l, &dout, &mut gq, &mut gk, &mut gv, c)?;
        self.put(dq, &gq)?;
        self.put(dk, &gk)?;
        self.put(dv, &gv)
    }
    fn embed_backward(&self, b: &HybridBatch, dx: &Buffer, d_table: &mut Buffer, c: &ModelConfig) -> Result<()> {
        self.cuda.embed_backward(&b.cuda, dx, d_table, c)
    }
    fn logprobs(&self, _h: &Buffer, _rows: &[usize], _t: &[u32], _lm: &Buffer, _sh: LogProbShape) -> Result<TokenLogProbs> {
        bail!("HybridOps: no log-probs")
    }
    fn logprobs_backward(
        &self,
        _h: &Buffer,
        _rows: &[usize],
        _t: &[u32],
        _lm: &Buffer,
        _f: &TokenLogProbs,
        _dl: &[f32],
        _de: Option<&[f32]>,
        _sh: LogProbShape,
        _dh: &mut Buffer,
        _dlm: &mut Buffer,
    ) -> Result<()> {
        bail!("HybridOps: no log-probs")
    }
    fn grpo_loss(&self, cfg: &scalerl::ops::grpo::GrpoConfig, x: &scalerl::ops::grpo::GrpoTokens) -> Result<scalerl::ops::grpo::GrpoOutput> {
        self.cuda.grpo_loss(cfg, x)
    }
    fn sum_squares(&self, g: &DeviceParams) -> Result<f64> {
        self.cuda.sum_squares(g)
    }
    fn scale_params(&self, g: &mut DeviceParams, s: f32) -> Result<()> {
        self.cuda.scale_params(g, s)
    }
    fn zero_params(&self, g: &mut DeviceParams) -> Result<()> {
        self.cuda.zero_params(g)
    }
    fn adamw_update(&self, w: &mut DeviceParams, g: &DeviceParams, m: &mut DeviceParams, v: &mut DeviceParams, s: &AdamWStep) -> Result<()> {
        self.cuda.adamw_update(w, g, m, v, s)
    }
}

/// The fixture model's packed forward and backward (Save::All and Save::Checkpoint) through the
/// device ops (attention on the CPU, see HybridOps) against the CPU backend with the same
/// bf16-rounded weights: every parameter's gradient within CHAIN_TOL (‖err‖/‖ref‖ per tensor;
/// K_BIAS_TOL for the k biases),
/// two runs bit-identical, and a second backward accumulating like the CPU's (micro-batches).
#[test]
fn model_backward_on_device_ops_matches_cpu() {
    let model = bf16_rounded(&fixture_model());
    let (c, table) = (model.config.clone(), model.table().clone());
    let seqs: Vec<Vec<u32>> = vec![(0..13).map(|i| (i * 37 + 5) % 300).collect(), vec![7, 7, 7, 250], (0..9).map(|i| (i * 11 + 1) % 300).collect()];
    let seq_refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
    let t: usize = seqs.iter().map(|s| s.len()).sum();
    let d_hidden = kernel_cases::to_f32(&kernel_cases::random_bf16(t * c.hidden_size, 5, 1.0));
    // CPU reference: two backward passes accumulated.
    let fwd_c = model.forward_packed(&seq_refs, Save::All).unwrap();
    let mut g_c = HostParams::zeros(&table);
    model.backward(&fwd_c, &d_hidden, &mut g_c).unwrap();
    let g_c1 = g_c.clone();
    model.backward(&fwd_c, &d_hidden, &mut g_c).unwrap();
    let ops = HybridOps { cuda: CudaOps::new(Device::Interpret { schedule: Schedule::Random(7) }), cpu: CpuOps };
    let w = DeviceParams::upload(&ops.cuda.dev, &model.weights).unwrap();
    let dev_model = Transformer::new(c.clone(), ops, w, table.clone()).unwrap();
    let dh = dev_model.ops.upload(&d_hidden).unwrap();
    let mut runs = Vec::new();
    for save in [Save::All, Save::Checkpoint] {
        let fwd = dev_model.forward_packed(&seq_refs, save).unwrap();
        let hidden = dev_model.ops.download(&fwd.hidden).unwrap();
        let e = rel_l2(&hidden, &fwd_c.hidden);
        assert!(e <= CHAIN_TOL, "{save:?}: forward hidden rel err {e}");
        let mut g = dev_model.ops.zeros_params(&table).unwrap();
        dev_model.backward(&fwd, &dh, &mut g).unwrap();
        let g1 = g.to_host(&dev_model.ops).unwrap();
        let mut errs = Vec::new();
        for ((e, got), (_, want)) in g1.iter().zip(g_c1.iter()) {
            if want.iter().all(|&x| x == 0.0) {
                // The lm_head: its gradient belongs to the log-prob head.
                assert!(got.iter().all(|&x| x == 0.0), "{}: written though the CPU's is zero", e.name);
                continue;
            }
            errs.push((rel_l2(got, want), e.name.clone()));
        }
        errs.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("{save:?}: forward hidden rel err {e:.2e}; parameter gradients ({t} rows), ‖err‖/‖ref‖ worst first:");
        for (err, name) in &errs {
            println!("  {name}: {err:.2e}");
        }
        for (err, name) in &errs {
            assert!(*err <= grad_tol(name), "{save:?}: {name} gradient rel err {err:.3e} > {}", grad_tol(name));
        }
        // A second backward accumulates (micro-batches), like the CPU's.
        dev_model.backward(&fwd, &dh, &mut g).unwrap();
        let g2 = g.to_host(&dev_model.ops).unwrap();
        for ((e, got), (_, want)) in g2.iter().zip(g_c.iter()) {
            if want.iter().any(|&x| x != 0.0) {
                let err = rel_l2(got, want);
                assert!(err <= grad_tol(&e.name), "{save:?}: accumulated {} gradient rel err {err:.3e}", e.name);
            }
        }
        runs.push(g1.flat().iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
    }
    // Save::Checkpoint recomputes each layer with the same code: the same bits as Save::All.
    assert!(runs[0] == runs[1], "the gradients of Save::All and Save::Checkpoint differ in their bits");
    // A second run on a fresh gradient set: the same bits.
    let fwd = dev_model.forward_packed(&seq_refs, Save::All).unwrap();
    let mut g = dev_model.ops.zeros_params(&table).unwrap();
    dev_model.backward(&fwd, &dh, &mut g).unwrap();
    let again: Vec<u32> = g.to_host(&dev_model.ops).unwrap().flat().iter().map(|v| v.to_bits()).collect();
    assert!(again == runs[0], "two backward runs differ in their bits");
    println!("the device backward is bit-identical across runs and between Save::All and Save::Checkpoint");
}
