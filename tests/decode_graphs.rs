//! CUDA graphs of decode steps, in interpret mode (src/device/interpret_graph.rs records what a
//! GPU capture records, so these run the GPU's graph logic on the CPU):
//! - graph replay gives the same tokens and log-probs, bit for bit, as the same steps launched
//!   eagerly (and as the generic per-step path), over batches that hit several buckets with
//!   padding, sequences finishing mid-run, block tables growing and a context class change;
//! - a capture refuses allocation, host↔device copies, synchronisation and nesting with the
//!   GPU's message, records launches instead of running them, and bakes arguments in by value;
//! - after warm-up, decode steps allocate no device memory at all.
mod common;
#[path = "common/decode_graph_cases.rs"]
mod decode_graph_cases;
use decode_graph_cases::{no_allocation_after_warm_up, replay_equals_eager};
use scalerl::device::Device;
use scalerl::ops::cuda::{cast_f32_to_bf16, CudaOps};
use scalerl::ops::Ops;

#[test]
fn graph_replay_equals_eager_steps() {
    replay_equals_eager(&Device::interpret, true);
}

#[test]
fn decode_steps_allocate_nothing_after_warm_up() {
    no_allocation_after_warm_up(&Device::interpret);
}

#[test]
fn capture_refuses_allocation_host_copies_and_nesting() {
    let dev = Device::interpret();
    let buf = dev.alloc(64).unwrap();
    let refused = |what: &str, r: anyhow::Result<scalerl::device::Graph>| {
        let e = format!("{:#}", r.err().unwrap_or_else(|| panic!("{what} inside a capture must fail")));
        assert!(e.contains(&format!("{what} is not allowed while a CUDA graph is being captured")), "{e}");
        assert!(e.contains("inside the graph capture"), "{e}");
    };
    refused("allocating device memory", dev.capture(|d| d.alloc(16).map(drop)));
    refused("allocating device memory", dev.capture(|d| d.upload(&[1u32, 2]).map(drop)));
    refused("copying host data to the device", dev.capture(|d| d.write(&buf, &[1u32])));
    refused("copying device data to the host", dev.capture(|d| d.download::<u32>(&buf).map(drop)));
    refused("synchronising the device", dev.capture(|d| d.synchronize()));
    refused("a nested capture", dev.capture(|d| d.capture(|d| d.zero(&buf)).map(drop)));
    // The ops layer's allocating calls are refused the same way (a decode body must not make them).
    let ops = CudaOps::new(Device::interpret());
    let e = format!("{:#}", ops.dev.capture(|_| ops.zeros(8).map(drop)).err().unwrap());
    assert!(e.contains("allocating device memory is not allowed"), "{e}");
    let e = format!("{:#}", dev.capture(|_| Ok(())).err().unwrap());
    assert!(e.contains("recorded nothing"), "{e}");

    // The device is usable after every refusal, and a capture records instead of running: the
    // output is untouched until the replay, which reads the inputs written in place since.
    let n = 8;
    let (src, dst) = (dev.alloc(n * 4).unwrap(), dev.alloc(n * 2).unwrap());
    dev.write(&src, &[1.5f32; 8]).unwrap();
    dev.zero(&dst).unwrap();
    let graph = dev.capture(|d| cast_f32_to_bf16(d, &src, &dst, n)).unwrap();
    assert_eq!(graph.recorded_ops(), Some(1));
    assert_eq!(dev.download::<u16>(&dst).unwrap(), vec![0u16; n], "a captured launch must not run");
    for v in [2.0f32, -3.25] {
        dev.write(&src, &[v; 8]).unwrap();
        graph.replay().unwrap();
        let got: Vec<f32> = dev.download::<half::bf16>(&dst).unwrap().iter().map(|x| x.to_f32()).collect();
        assert_eq!(got, vec![v; n], "replay reads the inputs written in place");
    }
    // Scalars are baked in by value: a graph of n = 4 keeps converting 4 elements.
    let four = dev.capture(|d| cast_f32_to_bf16(d, &src, &dst, 4)).unwrap();
    dev.zero(&dst).unwrap();
    dev.write(&src, &[1.0f32; 8]).unwrap();
    four.replay().unwrap();
    let got: Vec<f32> = dev.download::<half::bf16>(&dst).unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(got, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // A launch the kernel's signature refuses is refused at capture, as on a GPU.
    let bad = dev.capture(|d| d.launch("cast_f32_to_bf16", scalerl::device::LaunchConfig { grid: scalerl::device::Dim3::x(1), block: scalerl::device::Dim3::x(32), shared_bytes: 0 }, &[]));
    assert!(format!("{:#}", bad.err().unwrap()).contains("takes parameters of sizes"));
}


#[test]
fn a_refused_decode_step_names_its_cause_and_leaves_the_workspace_usable() {
    use scalerl::engine::SamplingParams;
    use scalerl::model::{CudaModel, SeqChunk};
    let model = decode_graph_cases::model();
    let m = CudaModel::from_model(CudaOps::new(Device::interpret()), &model).unwrap();
    let mut cache = m.new_cache(8, 4).unwrap();
    let table: Vec<u32> = (0..8).collect();
    let draw = Some(SamplingParams { temperature: 0.7, seed: 3, ..Default::default() }.draw(5));
    let prompt = [5u32, 6, 7, 8, 9];
    let mut step = |tokens: &[u32], start: usize, table: &[u32]| m.step(&mut cache, &[SeqChunk { tokens, start_pos: start, table }], &[draw]);
    step(&prompt, 0, &table[..2]).unwrap();
    let first = step(&[10], 5, &table[..2]).unwrap(); // the bucket's warm-up and capture
    let e = format!("{:#}", step(&[10_000], 6, &table[..2]).unwrap_err());
    assert!(e.contains("outside the vocabulary"), "{e}");
    // Block 8 is the cache's padding block: no sequence may name it.
    let e = format!("{:#}", step(&[11], 6, &[0, 8]).unwrap_err());
    assert!(e.contains("names block 8 of a 8-block cache"), "{e}");
    // A refused step changed nothing the next one relies on: rerunning the warm-up's step
    // (the same token at the same position) replays to the same draw.
    let again = step(&[10], 5, &table[..2]).unwrap();
    assert_eq!(again, first);
    assert!(m.ops.decode_stats().replays >= 1);
}
