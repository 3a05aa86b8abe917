#!/usr/bin/env python3
"""PyTorch reference timings for the kernel benches (benches/kernels.rs), on the GPU machine.

Same ids and shapes as the criterion benches (group/parameter), eager PyTorch ops (SDPA for
attention, F.linear/cuBLAS for the GEMMs), timed the way the benches time: `reps` back-to-back
calls between two CUDA events, after a warm-up. Writes {"id": microseconds} as JSON.
A column of the table that scripts/gpu_check_table.py prints; failures of one op are reported
and skipped, and no failure here fails the GPU check.

usage: gpu_torch_ref.py OUT.json
"""
import json
import sys
import time

H, NH, NKV, D, INTER, VOCAB, BLOCK = 1536, 12, 2, 128, 8960, 151936, 16
KV = NKV * D
TOKENS = [1, 64, 4096]


def main():
    out_path = sys.argv[1]
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        print(f"torch reference: skipped (no torch: {e})")
        json.dump({}, open(out_path, "w"))
        return
    if not torch.cuda.is_available():
        print("torch reference: skipped (torch sees no GPU)")
        json.dump({}, open(out_path, "w"))
        return
    dev = "cuda"
    bf = torch.bfloat16
    g = torch.Generator(device=dev)
    g.manual_seed(0)

    def rnd(*shape, dtype=bf, scale=1.0):
        return ((torch.rand(*shape, device=dev, generator=g) - 0.5) * 2 * scale).to(dtype)

    def timed(fn, min_ms=20.0):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-6)
        reps = int(min(max(min_ms / 1e3 / one, 5), 2000))
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples = []
        for _ in range(5):
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / reps)
        samples.sort()
        return samples[len(samples) // 2]

    results = {}

    def bench(id_, make):
        try:
            fn = make()
            results[id_] = timed(fn)
            print(f"torch {id_}: {results[id_]:.1f} us", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"torch {id_}: failed: {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()

    n = 512 << 20
    bench("copy/dtod_512MiB", lambda: (lambda s, d: lambda: d.copy_(s))(
        torch.randint(0, 255, (n,), dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)))

    for t in TOKENS:
        def mk_rms(t=t):
            x, res, w = rnd(t, H), rnd(t, H), rnd(H)
            return lambda: F.rms_norm(res.add_(x), (H,), w, 1e-6)
        bench(f"rmsnorm_residual_bf16/t{t}", mk_rms)

    table = rnd(VOCAB, H)
    for t in TOKENS:
        ids = torch.randint(0, VOCAB, (t,), device=dev)
        bench(f"embedding_gather_bf16/t{t}", lambda ids=ids: lambda: F.embedding(ids, table))
    del table

    for t in TOKENS:
        def mk_rope(t=t):
            q, k = rnd(t, NH, D), rnd(t, NKV, D)
            qb, kb = rnd(NH, D, scale=0.5), rnd(NKV, D, scale=0.5)
            pos = torch.randint(0, 4096, (t,), device=dev).float()
            inv = 1.0 / (1e6 ** (torch.arange(0, D, 2, device=dev).float() / D))
            ang = pos[:, None] * inv[None, :]
            cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :].to(bf)
            sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :].to(bf)

            def rot(x):
                x1, x2 = x.chunk(2, -1)
                return torch.cat([-x2, x1], -1)

            def fn():
                qq, kk = q + qb, k + kb
                return qq * cos + rot(qq) * sin, kk * cos + rot(kk) * sin
            return fn
        bench(f"rope_qk_bf16/t{t}", mk_rope)

    for t in TOKENS:
        def mk_kv(t=t):
            blocks = t * (2048 // BLOCK) if t < 4096 else t // BLOCK
            kc, vc = torch.empty(blocks * BLOCK, KV, dtype=bf, device=dev), torch.empty(blocks * BLOCK, KV, dtype=bf, device=dev)
            k, v, vb = rnd(t, KV), rnd(t, KV), rnd(KV, scale=0.5)
            slots = (torch.arange(t, device=dev) * 2048 + 2047) if t < 4096 else torch.arange(t, device=dev)

            def fn():
                kc.index_copy_(0, slots, k)
                vc.index_copy_(0, slots, v + vb)
            return fn
        bench(f"kv_cache_write_bf16/t{t}", mk_kv)

    for t in TOKENS:
        def mk_silu(t=t):
            gt, u = rnd(t * INTER, scale=4.0), rnd(t * INTER, scale=2.0)
            return lambda: F.silu(gt) * u
        bench(f"silu_mul_bf16/t{t}", mk_silu)

    # The fused q|k|v projection's split (kernels/split_cols.cu): PyTorch's split + contiguous copies.
    for name, widths in [("qkv", [H, KV, KV])]:
        for t in TOKENS:
            def mk_split(t=t, widths=widths):
                x = rnd(t, sum(widths))
                return lambda: [p.contiguous() for p in torch.split(x, widths, dim=1)]
            bench(f"split_cols_bf16/{name}_t{t}", mk_split)

    for r in [1, 64]:
        bench(f"cast_bf16_to_f32/logits_r{r}", lambda r=r: (lambda x: lambda: x.float())(rnd(r * VOCAB, scale=8.0)))
    bench("cast_f32_to_bf16/weight_8960x1536", lambda: (lambda x: lambda: x.to(bf))(rnd(INTER * H, dtype=torch.float32, scale=0.1)))

    for name, b in [("decode_b1_ctx4096", 1), ("decode_b64_ctx4096", 64)]:
        def mk_dec(b=b):
            q, k, v = rnd(b, NH, 1, D), rnd(b, NKV, 4096, D), rnd(b, NKV, 4096, D)
            return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        bench(f"paged_attention_bf16/{name}", mk_dec)

    def mk_pre():
        q, k, v = rnd(1, NH, 512, D), rnd(1, NKV, 512, D), rnd(1, NKV, 512, D)
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    bench("paged_attention_bf16/prefill_t512", mk_pre)

    # benches/attention_decode.rs and attention_prefill.rs: PyTorch's SDPA (its flash backend,
    # dense contiguous K/V: no paging) on the same shapes; one timing serves both our new kernel's
    # id and the plain kernel's id of the same shape.
    for b in [1, 32, 128]:
        for ctx in [1024, 8192, 16384, 24576]:
            def mk_decode(b=b, ctx=ctx):
                q, k, v = rnd(b, NH, 1, D), rnd(b, NKV, ctx, D), rnd(b, NKV, ctx, D)
                return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            bench(f"attention_decode/decode_b{b}_ctx{ctx}", mk_decode)
            if f"attention_decode/decode_b{b}_ctx{ctx}" in results:
                results[f"paged_attention_bf16/decode_b{b}_ctx{ctx}"] = results[f"attention_decode/decode_b{b}_ctx{ctx}"]

    def mk_causal(q_len, kv_len, b=1):
        q, k, v = rnd(b, NH, q_len, D), rnd(b, NKV, kv_len, D), rnd(b, NKV, kv_len, D)
        if q_len == kv_len:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        # A chunk after a cached prefix: query i sees keys 0 ..= kv_len - q_len + i.
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=dev).tril(kv_len - q_len)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    for t in [1024, 2048, 4096, 8192, 16384, 24576]:
        bench(f"prefill_attention_bf16/prefill_t{t}", lambda t=t: mk_causal(t, t))
        if f"prefill_attention_bf16/prefill_t{t}" in results:
            results[f"paged_attention_bf16/prefill_t{t}"] = results[f"prefill_attention_bf16/prefill_t{t}"]
    bench("prefill_attention_bf16/chunked_b8_c512_ctx4096", lambda: mk_causal(512, 4096, b=8))

    for layer, n, k, tokens in [("q_proj", H, H, TOKENS), ("kv_proj", KV, H, [64]), ("qkv_fused", H + 2 * KV, H, TOKENS),
                                ("gate_up_fused", 2 * INTER, H, TOKENS), ("gate_up", INTER, H, TOKENS),
                                ("down", H, INTER, TOKENS), ("lm_head", VOCAB, H, [64])]:
        w = rnd(n, k, scale=0.05)
        for m in tokens:
            bench(f"gemm_bf16_nt/{layer}_m{m}_n{n}_k{k}", lambda m=m, k=k, w=w: (lambda x: lambda: F.linear(x, w))(rnd(m, k)))
        del w

    json.dump(results, open(out_path, "w"), indent=1)
    print(f"torch reference: {len(results)} timings ({torch.__version__}, {torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
