//! Interpret-mode parity of every CUDA kernel against the CPU reference: random inputs, several
//! shapes including ragged ones, outputs poisoned (NaN) before the launch so an unwritten element
//! fails, and every thread schedule. CI also runs this file under AddressSanitizer.
use half::bf16;
use scalerl::backend::cpu::ops;
use scalerl::device::{Arg, Device, Dim3, LaunchConfig, Schedule};

const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];
const POISON: bf16 = bf16::from_bits(0x7fc1); // a NaN: any element left unwritten shows

fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale)
        })
        .collect()
}

fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// |a − b| ≤ atol + rtol·|b| elementwise, with bf16's 8-bit mantissa in mind.
fn assert_close_bf16(got: &[bf16], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f32();
        assert!((g - w).abs() <= 1e-2 + 1e-2 * w.abs(), "{what}[{i}]: kernel {g} vs reference {w}");
    }
}

#[test]
fn kernels_are_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    assert!(names.iter().any(|n| n == "rmsnorm_residual_bf16"), "{names:?}");
}

#[test]
fn rmsnorm_residual_matches_cpu() {
    for (rows, hidden) in [(1, 32), (3, 72), (7, 100), (2, 1536), (5, 33)] {
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let seed = (rows * 1000 + hidden + si) as u64;
            let x = random_bf16(rows * hidden, seed, 2.0);
            let res = random_bf16(rows * hidden, seed + 1, 2.0);
            let w = random_bf16(hidden, seed + 2, 1.0);
            let eps = 1e-6;
            // CPU reference on the bf16-rounded sum (the kernel rounds it too).
            let sum: Vec<f32> = to_f32(&x).iter().zip(to_f32(&res)).map(|(a, b)| bf16::from_f32(a + b).to_f32()).collect();
            let mut want = vec![0f32; rows * hidden];
            ops::rmsnorm(&sum, &to_f32(&w), eps, &mut want);

            let (bx, bres, bw) = (dev.upload(&x).unwrap(), dev.upload(&res).unwrap(), dev.upload(&w).unwrap());
            let bout = dev.upload(&vec![POISON; rows * hidden]).unwrap();
            let cfg = LaunchConfig { grid: Dim3::x(rows as u32), block: Dim3::x(256), shared_bytes: 0 };
            let args = [Arg::Buf(&bx), Arg::Buf(&bres), Arg::Buf(&bw), Arg::Buf(&bout), Arg::I32(hidden as i32), Arg::F32(eps)];
            dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
            let what = format!("rmsnorm {rows}x{hidden} {schedule:?}");
            assert_close_bf16(&dev.download::<bf16>(&bout).unwrap(), &want, &what);
            let new_res = dev.download::<bf16>(&bres).unwrap();
            assert_eq!(to_f32(&new_res), sum, "{what}: residual");

            // Without x (first layer): the residual is only normalised, not changed.
            let bres2 = dev.upload(&res).unwrap();
            let bout2 = dev.upload(&vec![POISON; rows * hidden]).unwrap();
            let args = [Arg::U64(0), Arg::Buf(&bres2), Arg::Buf(&bw), Arg::Buf(&bout2), Arg::I32(hidden as i32), Arg::F32(eps)];
            dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
            ops::rmsnorm(&to_f32(&res), &to_f32(&w), eps, &mut want);
            assert_close_bf16(&dev.download::<bf16>(&bout2).unwrap(), &want, &format!("{what} without x"));
            assert_eq!(dev.download::<bf16>(&bres2).unwrap(), res);
        }
    }
}

#[test]
fn launch_errors_are_clear() {
    let dev = Device::interpret();
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(32), shared_bytes: 0 };
    let err = dev.launch("no_such_kernel", cfg, &[]).unwrap_err().to_string();
    assert!(err.contains("no_such_kernel"), "{err}");
    let err = dev.launch("rmsnorm_residual_bf16", cfg, &[Arg::I32(1)]).unwrap_err().to_string();
    assert!(err.contains("sizes"), "{err}");
}
