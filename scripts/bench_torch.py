#!/usr/bin/env python3
"""PyTorch-eager baseline for the CPU speed comparison (dev venv, not CI).

    python scripts/bench_torch.py --model DIR --prompt-len 64 --new-tokens 64 --batch 1 --threads 2

Prefill: one forward over batch x prompt-len random tokens. Decode: greedy steps of one token
per sequence with the KV cache, EOS ignored. Prints one JSON line.
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                 attn_implementation="eager").eval()
    # Weights may still be lazily memory-mapped from the file: copy them into RAM, or the first
    # runs measure page faults (seconds for a 0.5 GB model).
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    gen = torch.Generator().manual_seed(0)
    # Avoid special ids (< 256 are safe for every vocab here); content doesn't matter for speed.
    prompt = torch.randint(256, model.config.vocab_size, (args.batch, args.prompt_len), generator=gen)

    best_prefill = best_decode = float("inf")
    with torch.inference_mode():
        for rep in range(args.repeats + 1):  # run 0 is a warm-up (allocator, oneDNN kernels)
            t0 = time.perf_counter()
            out = model(prompt, use_cache=True)
            t1 = time.perf_counter()
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(args.new_tokens):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
            if rep:
                best_prefill, best_decode = min(best_prefill, t1 - t0), min(best_decode, t2 - t1)

    print(json.dumps({
        "prefill_tok_s": round(args.batch * args.prompt_len / best_prefill, 1),
        "decode_tok_s": round(args.batch * args.new_tokens / best_decode, 1),
        "batch": args.batch, "threads": args.threads, "dtype": args.dtype,
        "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "torch": torch.__version__, "model": args.model,
        # OpenMP threads collapse when another process holds a core: check this is ~0.
        "loadavg_1m_before": load0}))


if __name__ == "__main__":
    main()
