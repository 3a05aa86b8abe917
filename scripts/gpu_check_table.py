#!/usr/bin/env python3
"""The one table of the GPU check (scripts/gpu-check.sh → gpu-bundle/run.sh).

usage: gpu_check_table.py TESTS_LOG CRITERION_DIR[:CRITERION_DIR...] TORCH_JSON [DEVICE_LINE] [RESULTS_JSON]

- TESTS_LOG: the output of the tests/gpu.rs binary (libtest format).
- CRITERION_DIR: criterion's output folder (CRITERION_HOME) of one bench binary
  (benches/kernels.rs, attention_decode.rs, attention_prefill.rs, attention_packed.rs): one section each, with the
  copy ceiling that binary measured in its own run.
  A folder holding decode_step.json (benches/decode_step.rs: one decode step of the random-weight
  1.5B model) gets its own section: step = forward + sampling, the host's issue time, and the
  step's HBM roofline (weights + K/V bytes over the copy bandwidth of that run).
- TORCH_JSON: {bench id: microseconds} from scripts/gpu_torch_ref.py (may be missing or empty).
Prints: the test results (failures with their first message lines), then per kernel and shape:
time, achieved GB/s (napkin bytes of the kernel header / time), % of the device-to-device copy
bandwidth measured in the same run, TFLOP/s for the GEMMs, and PyTorch's time for the same op.
Writes every number to RESULTS_JSON if given. Exit status 1 if a test failed or none ran.
"""
import json
import os
import re
import sys

ORDER = ["copy", "rmsnorm_residual_bf16", "embedding_gather_bf16", "rope_qk_bf16", "kv_cache_write_bf16",
         "silu_mul_bf16", "split_cols_bf16", "cast_bf16_to_f32", "cast_f32_to_bf16", "attention_decode", "prefill_attention_bf16", "mixed_attention_bf16",
         "paged_attention_bf16", "attention_packed_fwd", "attention_packed_bwd", "gemm_bf16_nt",
         # benches/backward_kernels.rs
         "add_bf16", "add_bias_bf16", "silu_mul_backward_bf16", "rope_qk_backward_bf16", "rmsnorm_backward_bf16",
         "bias_backward", "embedding_backward_bf16", "gemm_bf16_nn", "gemm_bf16_tn_acc_f32", "adamw_f32",
         "sum_squares_f32", "scale_f32", "cast_master_f32_to_bf16",
         # benches/logprob.rs
         "logprob", "grpo_token_loss",
         # benches/sample.rs
         "sample_f32", "sample_cpu_reference"]
GEMMS = ("gemm_bf16_nt", "gemm_bf16_nn", "gemm_bf16_tn_acc_f32")
# Host-side groups (run on the CPU beside the GPU benches): no "% copy" of the device ceiling.
HOST = ("sample_cpu_reference",)


def shape_key(param):
    """Sort shapes by their numbers (b1 < b32 < b128), not as text."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", param)]


def parse_tests(path):
    passed, failed, skipped = [], [], []
    details = {}
    if not os.path.exists(path):
        return passed, failed, skipped, details
    text = open(path, errors="replace").read()
    for m in re.finditer(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", text, re.M):
        {"ok": passed, "FAILED": failed, "ignored": skipped}[m.group(2)].append(m.group(1))
    # libtest's failure section: "---- name stdout ----" then the captured output and panic.
    for m in re.finditer(r"^---- (\S+) stdout ----\n(.*?)(?=^---- |^(?:failures|successes):\s*$|^test result|\Z)", text, re.M | re.S):
        lines = [ln for ln in m.group(2).splitlines() if ln.strip()]
        panic = [i for i, ln in enumerate(lines) if "panicked at" in ln]
        keep = lines[panic[0]:panic[0] + 3] if panic else lines[-3:]
        details[m.group(1)] = " | ".join(s.strip() for s in keep)[:400]
    return passed, failed, skipped, details


def load_criterion(root):
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files or "estimates.json" not in files:
            continue
        b = json.load(open(os.path.join(dirpath, "benchmark.json")))
        e = json.load(open(os.path.join(dirpath, "estimates.json")))
        est = e.get("slope") or e["median"]
        ns = est["point_estimate"]
        thr = b.get("throughput") or {}
        rows.append({
            "group": b["group_id"],
            "id": b.get("value_str") or b.get("function_id") or "",
            "ns": ns,
            "bytes": thr.get("Bytes") or thr.get("BytesDecimal"),
            "flops": thr.get("Elements"),
        })
    return rows


def print_decode_step(path):
    """The section of benches/decode_step.rs: one line per batch x context, per backend."""
    try:
        parts = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"\ndecode_step: unreadable {path}: {e}")
        return []
    rows_out = []
    for part in parts:
        copy = part.get("copy_gb_per_s")
        ceiling = f"copy ceiling {copy:.0f} GB/s (same run)" if copy else "no roofline on the CPU"
        model = "the R1-Distill-1.5B-shaped model" if part["backend"] == "cuda" else "a small model (same code path)"
        print(f"\ndecode_step ({part['backend']}: {part['device']}): one decode step of {model}; {ceiling}")
        hdr = (f"{'shape':<16} {'step':>10} {'forward':>10} {'sample':>10} {'host':>10} {'host %':>7} "
               f"{'GB read':>8} {'roofline':>10} {'x roof':>7} {'fwd x':>6} {'engine':>10} {'eng x':>6}")
        print(hdr)
        print("-" * len(hdr))
        for r in part["rows"]:
            gb = (r["weight_bytes"] + r["kv_bytes"]) / 1e9
            roof = fmt_time(r["roofline_ms"] * 1e6) if r.get("roofline_ms") else "-"
            xr = f"{r['x_roofline']:.2f}x" if r.get("x_roofline") else "-"
            fx = f"{r['forward_ms'] / r['roofline_ms']:.2f}x" if r.get("roofline_ms") else "-"
            host = r.get("host_issue_ms")
            host_s, host_pct = (fmt_time(host * 1e6), f"{100 * host / r['step_ms']:.1f}%") if host else ("-", "-")
            eng = r.get("engine_step_ms")
            eng_s = fmt_time(eng * 1e6) if eng else "-"
            ex = f"{eng / r['roofline_ms']:.2f}x" if eng and r.get("roofline_ms") else "-"
            print(f"{r['id']:<16} {fmt_time(r['step_ms'] * 1e6):>10} {fmt_time(r['forward_ms'] * 1e6):>10} "
                  f"{fmt_time(r['sample_ms'] * 1e6):>10} {host_s:>10} {host_pct:>7} {gb:>8.2f} {roof:>10} {xr:>7} {fx:>6} {eng_s:>10} {ex:>6}"
                  f"{'  (K/V wrap a pool)' if r.get('kv_wrapped') else ''}")
            rows_out.append(dict(r, bench="decode_step", backend=part["backend"], device=part["device"],
                                 copy_gb_per_s=copy))
    print("(step = forward + sample, medians; x roof: step / roofline, fwd x: forward alone / roofline; sample: lm_head, logits to the host, the draw; host: time the host "
          "spends issuing the forward (launches, metadata, allocations), hidden while below the forward's; "
          "engine: the whole step as the engine runs it (Transformer::step: on CUDA the bucket's CUDA graph replayed on persistent buffers), eng x: engine / roofline; "
          "targets: batch 128 x 8K within 1.25x of the roofline, batch 1 within 1.5x, host < 5% of the step)")
    return rows_out


def gemm_bytes(param):
    m = re.search(r"_m(\d+)_n(\d+)_k(\d+)$", param)
    if not m:
        return None
    mm, n, k = map(int, m.groups())
    return 2 * (mm * k + n * k + mm * n)


def fmt_time(ns):
    if ns is None:
        return "-"
    return f"{ns / 1e3:.1f} µs" if ns < 1e6 else f"{ns / 1e6:.2f} ms"


def main():
    tests_log, crit_dir, torch_json = sys.argv[1:4]
    device = sys.argv[4] if len(sys.argv) > 4 else ""
    results_path = sys.argv[5] if len(sys.argv) > 5 else None
    passed, failed, skipped, details = parse_tests(tests_log)
    torch_t = {}
    if os.path.exists(torch_json):
        try:
            torch_t = json.load(open(torch_json))
        except ValueError:
            pass
    sections, decode_dirs = [], []
    for d in [d for d in crit_dir.split(":") if d]:
        if os.path.exists(os.path.join(d, "decode_step.json")):
            decode_dirs.append(d)
            continue
        rows = load_criterion(d) if os.path.isdir(d) else []
        rows.sort(key=lambda r: (ORDER.index(r["group"]) if r["group"] in ORDER else 99, shape_key(r["id"])))
        sections.append((os.path.basename(d.rstrip("/")), rows))

    print()
    print(f"=== scalerl GPU check{': ' + device if device else ''}")
    if os.path.exists(tests_log):
        print(f"tests/gpu.rs (SCALERL_REQUIRE_GPU=1): {len(passed)} passed, {len(failed)} failed, {len(skipped)} ignored")
    else:
        print("tests/gpu.rs: not run")
    for name in failed:
        print(f"  FAILED {name}: {details.get(name, '(see tests.log)')}")
    if not sections and not decode_dirs:
        print("benches: not run")
    decode_rows = []
    for d in decode_dirs:
        decode_rows += print_decode_step(os.path.join(d, "decode_step.json"))
    all_rows, ceilings = [], {}
    for name, rows in sections:
        copy = [r for r in rows if r["group"] == "copy"]
        copy_gbs = copy[0]["bytes"] / copy[0]["ns"] if copy and copy[0]["bytes"] else None  # bytes/ns = GB/s
        ceilings[name] = copy_gbs
        if not rows:
            print(f"\n{name}: no criterion results (see its bench log)")
            continue
        ceiling = f"{copy_gbs:.0f} GB/s" if copy_gbs else "not measured"
        print(f"\n{name}: device-to-device copy ceiling {ceiling} (bytes read + written, same run)")
        hdr = f"{'kernel':<22} {'shape':<26} {'time':>10} {'GB/s':>8} {'% copy':>7} {'TFLOP/s':>8} {'torch':>10} {'vs torch':>8}"
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            by = r["bytes"]
            if r["group"] in GEMMS:
                by = gemm_bytes(r["id"])
            gbs = by / r["ns"] if by else None
            r["bench"] = name
            r["gb_per_s"] = gbs
            r["pct_copy"] = 100 * gbs / copy_gbs if gbs and copy_gbs and r["group"] not in HOST else None
            r["tflops"] = r["flops"] / r["ns"] / 1e3 if r["flops"] else None
            tt = torch_t.get(f"{r['group']}/{r['id']}")
            r["torch_us"] = tt
            cols = [
                fmt_time(r["ns"]),
                f"{gbs:.0f}" if gbs else "-",
                f"{r['pct_copy']:.0f}%" if r["pct_copy"] is not None else "-",
                f"{r['tflops']:.1f}" if r["tflops"] else "-",
                fmt_time(tt * 1e3) if tt else "-",
                f"{tt * 1e3 / r['ns']:.2f}x" if tt else "-",
            ]
            print(f"{r['group']:<22} {r['id']:<26} {cols[0]:>10} {cols[1]:>8} {cols[2]:>7} {cols[3]:>8} {cols[4]:>10} {cols[5]:>8}")
        # The fused log-prob against its lm_head GEMMs (same run): forward / one, backward / two.
        lp = {r["id"]: r for r in rows if r["group"] == "logprob"}
        for key in sorted(lp, key=shape_key):
            m = re.match(r"fwd_t(\d+)$", key)
            gm, bw = lp.get(f"lm_head_gemm_t{m.group(1)}") if m else None, lp.get(f"bwd_t{m.group(1)}") if m else None
            if gm and bw:
                lp[key]["x_gemm"] = lp[key]["ns"] / gm["ns"]
                bw["x_gemm"] = bw["ns"] / (2 * gm["ns"])
                print(f"logprob t{m.group(1)}: forward {lp[key]['x_gemm']:.2f}x its lm_head GEMM, backward {bw['x_gemm']:.2f}x two "
                      f"(target <= 1.3x)")
        all_rows.extend(rows)
    if all_rows:
        print("(time: criterion's slope estimate per call, back-to-back launches; GB/s: the kernel header's "
              "napkin bytes / time; GEMM bytes = 2(mk + nk + mn); TFLOP/s: GEMMs 2mnk, prefill and packed attention "
              "forward 4·Σ visible keys·d·heads, packed backward 2.5x that, logprob 2·T·V·H forward and 4·T·V·H backward; "
              "torch: eager PyTorch, SDPA (flash) for attention; vs torch > 1: ours is faster)")
    if results_path:
        json.dump({"device": device, "tests": {"passed": passed, "failed": failed, "details": details},
                   "copy_gb_per_s": ceilings, "benches": all_rows, "decode_step": decode_rows, "torch_us": torch_t},
                  open(results_path, "w"), indent=1)
    tests_ran = os.path.exists(tests_log)
    sys.exit(1 if failed or (tests_ran and not passed) else 0)


if __name__ == "__main__":
    main()
