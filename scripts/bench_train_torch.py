#!/usr/bin/env python3
"""PyTorch-eager baseline for the trainer speed comparison (scripts/bench-train-vs-torch.sh).

    python scripts/bench_train_torch.py --model DIR --batch 4 --len 128 --threads 2

The same work as benches/train_cpu.rs --json: `batch` random sequences of `len` tokens (prompt =
first quarter), transformers' model in float32 with eager attention, log-probs and entropy of
the response tokens at temperature 0.6 (lm_head on the response rows only, as scalerl does),
verl's GRPO loss (token-mean, clip 0.2, entropy 0.001, low_var_kl 0.001), backward into every
parameter. Best of 3 timed steps after a warm-up; prints one JSON line.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").train()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(7)
    lo = min(256, vocab // 2)
    ids = torch.randint(lo, vocab, (args.batch, args.len), generator=gen)
    p = max(args.len // 4, 1)
    tgt = ids[:, p:]
    n = tgt.numel()
    adv = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(args.batch)])[:, None].expand_as(tgt)
    old = -5.0 + (torch.arange(n) % 7).float().view_as(tgt) * 0.01
    ref = -5.0 - (torch.arange(n) % 5).float().view_as(tgt) * 0.01
    lm_head = model.get_output_embeddings()

    def step():
        model.zero_grad(set_to_none=True)
        hidden = model.model(input_ids=ids).last_hidden_state[:, p - 1:-1]
        logits = lm_head(hidden).float() / 0.6
        logp = torch.log_softmax(logits, -1).gather(-1, tgt[..., None])[..., 0]
        pd = torch.softmax(logits, -1)
        entropy = torch.logsumexp(logits, -1) - (pd * logits).sum(-1)
        ratio = torch.exp(logp - old)
        pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)).mean()
        k = ref - logp
        kl = torch.clamp(torch.exp(k) - k - 1, -10, 10).mean()
        loss = pg - 0.001 * entropy.mean() + 0.001 * kl
        loss.backward()
        return loss.item()

    best = float("inf")
    for rep in range(args.repeats + 1):
        t0 = time.perf_counter()
        step()
        if rep:
            best = min(best, time.perf_counter() - t0)
    tokens = args.batch * args.len
    print(json.dumps({"fwd_bwd_tok_s": round(tokens / best, 1), "tokens": tokens, "seconds": round(best, 4),
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
