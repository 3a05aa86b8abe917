#!/usr/bin/env python3
"""Reference gradients for the trainer (tests/train_grads.rs), from transformers + torch.

    /path/to/venv/bin/python scripts/make_grad_fixtures.py     # pins: scripts/requirements-fixtures.txt

For each fixture model (tiny-qwen2: untied lm_head, q/k/v bias; tiny-llama: tied embeddings, no
bias) and a batch of prompt + response sequences in GRPO groups, computes with the model's own
transformers implementation (float32, eager attention) and the GRPO loss written as verl writes
it (compute_grpo_outcome_advantage, compute_policy_loss with low/high clip, kl_penalty
low_var_kl, entropy_from_logits, agg_loss), logits divided by the temperature:
  - the loss, its parts and metrics, per-token log-probs and entropies,
  - the gradient of every parameter (tests/fixtures/grads/<model>-grads.safetensors),
  - the parameters after 3 steps of torch.optim.AdamW + clip_grad_norm_ on the same batch
    (tests/fixtures/grads/<model>-adamw3.safetensors).
Also loss-only vectors (tests/fixtures/grads/loss_variants.json): the GRPO variants (clip-higher,
seq-mean-token-mean, seq-mean-token-sum, Dr. GRPO constant normaliser, KL off), advantages with and
without std normalisation, and SFT cross-entropy, each with its gradient wrt logp and entropy.
"""
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "grads"
EOS = 286
TEMPERATURE = 0.6


# ---------------------------------------------------------------- verl's math, in torch
def grpo_advantages(rewards, index, norm_by_std=True, eps=1e-6):
    """verl compute_grpo_outcome_advantage on scalar rewards (one per sequence)."""
    scores = torch.tensor(rewards, dtype=torch.float32)
    id2score = defaultdict(list)
    for i in range(len(rewards)):
        id2score[index[i]].append(scores[i])
    id2mean, id2std = {}, {}
    for idx, v in id2score.items():
        if len(v) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            t = torch.stack(v)
            id2mean[idx], id2std[idx] = torch.mean(t), torch.std(t)
    out = scores.clone()
    for i in range(len(rewards)):
        if norm_by_std:
            out[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
        else:
            out[i] = scores[i] - id2mean[index[i]]
    return out


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def agg_loss(loss_mat, mask, mode, constant=None):
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    seq_sum = torch.sum(loss_mat * mask, dim=-1)
    if mode == "seq-mean-token-sum":
        return seq_sum.mean()
    if mode == "seq-mean-token-mean":
        return (seq_sum / mask.sum(-1)).mean()
    if mode == "seq-mean-token-sum-norm":
        return (seq_sum / constant).mean()
    raise ValueError(mode)


def policy_loss(old_logp, logp, adv, mask, clip_low, clip_high, mode, constant=None):
    """verl compute_policy_loss (clip-higher form, no dual clip)."""
    negative_approx_kl = logp - old_logp
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = masked_mean(-negative_approx_kl, mask)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = agg_loss(torch.maximum(pg1, pg2), mask, mode, constant)
    clipfrac = masked_mean(torch.gt(pg2, pg1).float(), mask)
    return pg, clipfrac, ppo_kl


def low_var_kl(logp, ref_logp):
    kl = ref_logp - logp
    return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)


def grpo_total(cfg, logp, entropy, old, ref, adv, mask):
    pg, clipfrac, ppo_kl = policy_loss(old, logp, adv, mask, cfg["clip_low"], cfg["clip_high"], cfg["agg"], cfg.get("constant"))
    ent = agg_loss(entropy, mask, cfg["agg"], cfg.get("constant"))
    total = pg - cfg["entropy_coef"] * ent
    kl = torch.tensor(0.0)
    if cfg["kl_coef"] is not None:
        kl = agg_loss(low_var_kl(logp, ref), mask, cfg["agg"], cfg.get("constant"))
        total = total + cfg["kl_coef"] * kl
    parts = {"loss": total.item(), "pg_loss": pg.item(), "entropy_loss": ent.item(), "kl_loss": kl.item(),
             "clip_frac": clipfrac.item(), "approx_kl": ppo_kl.item(),
             "entropy_mean": masked_mean(entropy, mask).item()}
    return total, parts


def entropy_from_logits(logits):
    pd = torch.nn.functional.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


# ---------------------------------------------------------------- the batch
def valid_len(resp):
    return next((i + 1 for i, t in enumerate(resp) if t == EOS), len(resp))


def make_batch(gen, vocab, group_sizes):
    samples = []
    for g, n in enumerate(group_sizes):
        plen = int(torch.randint(4, 9, (1,), generator=gen))
        prompt = torch.randint(0, 280, (plen,), generator=gen).tolist()
        for _ in range(n):
            rlen = int(torch.randint(3, 11, (1,), generator=gen))
            resp = torch.randint(0, vocab, (rlen,), generator=gen).tolist()
            resp = [t if t != EOS else 7 for t in resp]
            if torch.rand(1, generator=gen).item() < 0.4 and rlen > 3:  # an EOS then junk after it
                resp[rlen // 2] = EOS
            reward = float(torch.rand(1, generator=gen).item() < 0.5)
            samples.append({"tokens": prompt + resp, "prompt_len": plen, "valid_len": valid_len(resp),
                            "group": g, "reward": reward})
    return samples


def response_logp_entropy(model, samples):
    """Per sample: log-probs and entropies of its valid response tokens, at the temperature."""
    lps, ents = [], []
    for s in samples:
        ids = torch.tensor([s["tokens"]])
        logits = model(input_ids=ids).logits[0].float()
        p, v = s["prompt_len"], s["valid_len"]
        lg = logits[p - 1:p - 1 + v] / TEMPERATURE
        tgt = ids[0, p:p + v]
        lps.append(torch.log_softmax(lg, dim=-1).gather(-1, tgt[:, None])[:, 0])
        ents.append(entropy_from_logits(lg))
    return lps, ents


def pad(rows, width):
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def batch_loss(model, samples, cfg, adv_seq, old_rows, ref_rows):
    lps, ents = response_logp_entropy(model, samples)
    width = max(len(s["tokens"]) - s["prompt_len"] for s in samples)  # verl: the response length
    mask = pad([torch.ones(s["valid_len"]) for s in samples], width)
    adv = adv_seq[:, None] * mask
    total, parts = grpo_total(cfg, pad(lps, width), pad(ents, width), pad(old_rows, width), pad(ref_rows, width), adv, mask)
    return total, parts, lps, ents


def flat(rows):
    return [float(x) for r in rows for x in r.tolist()]


def model_case(name, group_sizes, cfg, adamw, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d = FIX / name
    load = lambda: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").train()
    model = load()
    samples = make_batch(gen, model.config.vocab_size, group_sizes)
    adv_seq = grpo_advantages([s["reward"] for s in samples], [s["group"] for s in samples])
    with torch.no_grad():
        lps, _ = response_logp_entropy(model, samples)
    old_rows = [(lp + 0.15 * torch.randn(lp.shape, generator=gen)).float() for lp in lps]
    ref_rows = [(lp + 0.4 * torch.randn(lp.shape, generator=gen)).float() for lp in lps]

    total, parts, lps, ents = batch_loss(model, samples, cfg, adv_seq, old_rows, ref_rows)
    total.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    save_file(grads, str(OUT / f"{name}-grads.safetensors"))

    # 3 AdamW steps on the same batch (old/ref/advantages fixed), fresh model.
    model = load()
    params = [p for _, p in model.named_parameters()]
    opt = torch.optim.AdamW(params, lr=adamw["lr"], betas=(adamw["beta1"], adamw["beta2"]), eps=adamw["eps"],
                            weight_decay=adamw["weight_decay"])
    step_log = []
    for step in range(3):
        w = adamw["warmup_steps"]
        lr = adamw["lr"] * ((step + 1) / w if step < w else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss, p, _, _ = batch_loss(model, samples, cfg, adv_seq, old_rows, ref_rows)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=adamw["max_grad_norm"])
        opt.step()
        step_log.append({"lr": lr, "loss": loss.item(), "grad_norm": norm.item(), "clip_frac": p["clip_frac"]})
    save_file({n: p.detach().clone().contiguous() for n, p in model.named_parameters()},
              str(OUT / f"{name}-adamw3.safetensors"))

    return {
        "model": name, "temperature": TEMPERATURE, "eos": EOS, "loss_config": cfg, "adamw": adamw,
        "samples": samples, "advantages": adv_seq.tolist(),
        "old_logp": flat(old_rows), "ref_logp": flat(ref_rows),
        "logp": flat([x.detach() for x in lps]), "entropy": flat([x.detach() for x in ents]),
        "parts": parts, "steps": step_log,
        "grad_names": list(grads.keys()),
    }


# ---------------------------------------------------------------- loss-only vectors
def loss_variants(seed):
    gen = torch.Generator().manual_seed(seed)
    lens = [7, 3, 12, 1, 9]
    n = sum(lens)
    logp = -torch.rand(n, generator=gen) * 4
    entropy = torch.rand(n, generator=gen) * 3
    old = logp + 0.3 * torch.randn(n, generator=gen)
    ref = logp + 1.0 * torch.randn(n, generator=gen)
    ref[2] = logp[2] + 4.0  # low_var_kl clamps at 10 (e^4 − 5 ≈ 49.6)
    rewards = [1.0, 0.0, 1.0, 0.5, 0.0]
    groups = [0, 0, 0, 1, 2]
    adv_std = grpo_advantages(rewards, groups, True)
    adv_nostd = grpo_advantages(rewards, groups, False)
    width = max(lens)
    rows = lambda x: pad(list(torch.split(x, lens)), width)
    mask = pad([torch.ones(l) for l in lens], width)
    base = {"clip_low": 0.2, "clip_high": 0.2, "entropy_coef": 0.001, "kl_coef": 0.001, "agg": "token-mean"}
    variants = {
        "deepscaler": (base, adv_std),
        "clip_higher": ({**base, "clip_high": 0.28}, adv_std),
        "seq_mean_token_mean": ({**base, "agg": "seq-mean-token-mean", "entropy_coef": 0.1, "kl_coef": 0.2}, adv_std),
        "seq_mean_token_sum": ({**base, "agg": "seq-mean-token-sum"}, adv_std),
        "dr_grpo": ({**base, "agg": "seq-mean-token-sum-norm", "constant": 16.0, "kl_coef": None, "entropy_coef": 0.0}, adv_nostd),
        "kl_off": ({**base, "kl_coef": None}, adv_std),
    }
    out = {"seq_lens": lens, "logp": logp.tolist(), "entropy": entropy.tolist(), "old_logp": old.tolist(),
           "ref_logp": ref.tolist(), "rewards": rewards, "groups": groups,
           "advantages_std": adv_std.tolist(), "advantages_nostd": adv_nostd.tolist(), "variants": {}}
    for name, (cfg, adv) in variants.items():
        lp = rows(logp).requires_grad_()
        en = rows(entropy).requires_grad_()
        total, parts = grpo_total(cfg, lp, en, rows(old), rows(ref), adv[:, None] * mask, mask)
        total.backward()
        pick = lambda g: torch.cat([g[i, :l] for i, l in enumerate(lens)]).tolist()
        out["variants"][name] = {"config": cfg, "norm_by_std": adv is adv_std, "parts": parts,
                                 "d_logp": pick(lp.grad), "d_entropy": pick(en.grad)}
    lp = rows(logp).requires_grad_()
    sft = agg_loss(-lp, mask, "token-mean")
    sft.backward()
    out["sft"] = {"loss": sft.item(), "d_logp": torch.cat([lp.grad[i, :l] for i, l in enumerate(lens)]).tolist()}
    return out


def main():
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = [
        model_case("tiny-qwen2", [3, 3],
                   {"clip_low": 0.2, "clip_high": 0.2, "entropy_coef": 0.001, "kl_coef": 0.001, "agg": "token-mean"},
                   {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
                    "max_grad_norm": 1.0, "warmup_steps": 2}, seed=11),
        # Variant exercising what DeepScaleR's coefficients hide: clip-higher, per-sequence mean, a
        # group of one, large entropy and KL terms, and a clipping max-norm below the grad norm.
        model_case("tiny-llama", [3, 2, 1],
                   {"clip_low": 0.2, "clip_high": 0.28, "entropy_coef": 0.05, "kl_coef": 0.05, "agg": "seq-mean-token-mean"},
                   {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
                    "max_grad_norm": 0.05, "warmup_steps": 0}, seed=12),
    ]
    for c in cases:
        (OUT / f"{c['model']}.json").write_text(json.dumps(c, indent=1) + "\n")
        print(c["model"], c["parts"], [s["grad_norm"] for s in c["steps"]])
    (OUT / "loss_variants.json").write_text(json.dumps(loss_variants(13), indent=1) + "\n")


if __name__ == "__main__":
    main()
