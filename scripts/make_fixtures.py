#!/usr/bin/env python3
"""Generate the tiny, committed test fixtures under tests/fixtures/.

Run from the repo root with the dev venv (scripts/requirements-fixtures.txt):
    /work/venvs/fixtures/bin/python scripts/make_fixtures.py
CI never runs this: its outputs are committed. Everything is seeded, so a rerun with the
pinned versions reproduces the same files.
"""
import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
torch.set_num_threads(min(2, os.cpu_count() or 1))

# DeepSeek-R1-Distill's special tokens (fullwidth bars and U+2581), in its id order, plus the
# ChatML pair so a tokenizer test can cover both families.
EOS, USER, ASSISTANT, BOS = "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>"
SPECIALS = [EOS, USER, ASSISTANT, BOS, "<think>", "</think>", "<|im_start|>", "<|im_end|>"]
N_MERGES = 30  # "a few dozen": enough that common words become single multi-byte tokens
VOCAB_PAD = 300  # model vocab, padded past the tokenizer like real checkpoints

# Qwen2's pre-tokenizer split regex (same as the real tokenizer.json), then byte-level mapping.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Simplified DeepSeek-R1-Distill template: system text first, then User/Assistant turns; the
# generation prompt is a bare <｜Assistant｜> (the original template, without "<think>\n").
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{% endif %}{% endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")

CORPUS = """The quick brown fox jumps over the lazy dog. The answer is the sum of the two numbers.
Let x be the number of apples. Then x + 3 = 7, so x = 4. The answer is 4.
What is the value of 2 + 2? The value is 4. What is the square of 3? The square of 3 is 9.
Solve for x: 2x + 5 = 11. Subtract 5 from both sides, then divide by 2, so x = 3.
The probability that the coin lands on heads is one half. The area of the circle is pi r^2.
There are 12 eggs in the box, and the cat sat on the mat in the house with the dog.
Therefore the final answer is \\boxed{42}. We think step by step and then we answer.
"""


def make_tokenizer(out: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
    ])
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + N_MERGES, initial_alphabet=alphabet,
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    assert tok.get_vocab_size() == 256 + N_MERGES, tok.get_vocab_size()
    tok.add_special_tokens(SPECIALS)
    bos_id = tok.token_to_id(BOS)
    # R1-Distill's tokenizer prepends BOS (add_bos_token: true).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return tok


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random init leaves biases at 0 and norm weights at 1; move them so a test notices a
    skipped bias or norm weight."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids])).logits[0].float()


@torch.no_grad()
def greedy(model, prompt, n):
    """Greedy decode without KV cache (the plainest reference), EOS ignored. Returns tokens
    and the smallest top1-top2 logit margin seen."""
    ids, out, margin = list(prompt), [], float("inf")
    for _ in range(n):
        last = logits_of(model, ids)[-1]
        top2 = torch.topk(last, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        nxt = int(torch.argmax(last))
        ids.append(nxt)
        out.append(nxt)
    return out, margin


def r7(x):  # ~7 significant digits keeps the JSON small and is below f32 test tolerances
    return [r7(v) for v in x] if isinstance(x, list) else float(f"{x:.7g}")


def make_reference(model, tok_size, seed, lengths=(1, 5, 17, 40), new_tokens=16):
    rng = np.random.default_rng(seed)
    prompts, logits, greedies = [], [], []
    for n in lengths:
        # Near-ties would make exact-match tests flaky; tiny random models also like to fall
        # into repeating one token, which would hide position bugs: ask for some variety.
        for _attempt in range(300):
            prompt = [int(t) for t in rng.integers(0, tok_size, n)]
            toks, margin = greedy(model, prompt, new_tokens)
            if margin >= 1e-3 and len(set(toks)) >= 6:
                break
        else:
            raise RuntimeError(f"no prompt of length {n} with a clear, varied greedy run")
        prompts.append(prompt)
        logits.append(r7(logits_of(model, prompt).tolist()))
        greedies.append({"prompt": prompt, "max_new_tokens": new_tokens, "tokens": toks,
                         "min_margin": r7(margin)})
    return {"prompts": prompts, "logits": logits, "greedy": greedies}


def rounded(model_cls, cfg, model, dtype):
    """f32 copy of `model` with weights rounded to `dtype`. (model.to(dtype).float() would also
    round RoPE's inv_freq buffer, which a loader recomputes in f32.)"""
    m = model_cls(cfg).eval()
    m.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    return m


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")


def copy_tokenizer(tok_dir: Path, out: Path) -> None:
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / f, out / f)


def set_top_level_rope_theta(cfg_path: Path, theta: float) -> None:
    """DeepSeek-R1-Distill's config.json has a top-level rope_theta (transformers 4 style);
    transformers 5 writes rope_parameters instead. Rewrite to the older form."""
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("rope_parameters", None)
    cfg.pop("rope_scaling", None)
    cfg["rope_theta"] = theta
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def check_reload(out: Path, ref) -> None:
    m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for p, want in zip(ref["prompts"], ref["logits"]):
        got = logits_of(m, p)
        err = float((got - torch.tensor(want)).abs().max())
        assert err < 1e-5 * max(1.0, float(got.abs().max())), (out, err)
    for g in ref["greedy"]:
        assert greedy(m, g["prompt"], g["max_new_tokens"])[0] == g["tokens"], out


def main():
    tok_dir = ROOT / "tokenizer"
    tok = make_tokenizer(tok_dir)
    tok_size = tok.get_vocab_size()
    assert tok_size < VOCAB_PAD
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    print(f"tokenizer: {tok_size} tokens, bos={bos} eos={eos}")

    # --- tiny-qwen2: f32, odd sizes, top-level rope_theta ---
    torch.manual_seed(1234)
    qcfg = Qwen2Config(hidden_size=72, num_attention_heads=6, num_key_value_heads=2,
                       intermediate_size=136, num_hidden_layers=2, vocab_size=VOCAB_PAD,
                       max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, initializer_range=0.1, bos_token_id=bos,
                       eos_token_id=eos, use_sliding_window=False, hidden_act="silu",
                       dtype="float32")
    qwen = Qwen2ForCausalLM(qcfg).eval()
    perturb_(qwen, torch.Generator().manual_seed(99))
    out = ROOT / "tiny-qwen2"
    shutil.rmtree(out, ignore_errors=True)
    qwen.save_pretrained(out, safe_serialization=True)
    set_top_level_rope_theta(out / "config.json", 10000.0)
    copy_tokenizer(tok_dir, out)
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": bos, "eos_token_id": [eos], "do_sample": True,
        "temperature": 0.6, "top_p": 0.95}, indent=2) + "\n")
    ref = make_reference(qwen, tok_size, seed=1)
    write_json(out / "reference.json", ref)
    check_reload(out, ref)
    assert AutoModelForCausalLM.from_pretrained(out).config.rope_parameters["rope_theta"] == 10000.0

    # --- tiny-qwen2-bf16-sharded: same weights rounded to bf16, two shards ---
    out_b = ROOT / "tiny-qwen2-bf16-sharded"
    shutil.rmtree(out_b, ignore_errors=True)
    qwen_b = rounded(Qwen2ForCausalLM, qcfg, qwen, torch.bfloat16)
    copy.deepcopy(qwen_b).to(torch.bfloat16).save_pretrained(out_b, safe_serialization=True,
                                                              max_shard_size="150KB")
    shards = sorted(p.name for p in out_b.glob("*.safetensors"))
    assert len(shards) == 2 and (out_b / "model.safetensors.index.json").exists(), shards
    set_top_level_rope_theta(out_b / "config.json", 10000.0)
    copy_tokenizer(tok_dir, out_b)
    shutil.copy(out / "generation_config.json", out_b)
    write_json(out_b / "reference.json", make_reference(qwen_b, tok_size, seed=2))
    check_reload(out_b, json.loads((out_b / "reference.json").read_text()))

    # --- tiny-llama: f16 storage, tied embeddings, one KV head, rope_parameters form ---
    torch.manual_seed(5678)
    lcfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                       intermediate_size=100, num_hidden_layers=3, vocab_size=VOCAB_PAD,
                       max_position_embeddings=256,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                       rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
                       mlp_bias=False, initializer_range=0.1, bos_token_id=bos, eos_token_id=eos,
                       dtype="float16")
    llama = LlamaForCausalLM(lcfg).eval()
    perturb_(llama, torch.Generator().manual_seed(77))
    llama = rounded(LlamaForCausalLM, lcfg, llama, torch.float16)  # the reference uses these
    out_l = ROOT / "tiny-llama"
    shutil.rmtree(out_l, ignore_errors=True)
    copy.deepcopy(llama).half().save_pretrained(out_l, safe_serialization=True)
    copy_tokenizer(tok_dir, out_l)
    (out_l / "generation_config.json").write_text(json.dumps({
        "bos_token_id": bos, "eos_token_id": eos}, indent=2) + "\n")
    ref = make_reference(llama, tok_size, seed=3)
    write_json(out_l / "reference.json", ref)
    check_reload(out_l, ref)

    # --- tiny-qwen2-d64: head_dim 64 (the flash attention kernels' size), bf16, GQA 2:1 ---
    # A prompt of 70 tokens crosses the prefill kernel's 64-row query tile.
    torch.manual_seed(4321)
    dcfg = Qwen2Config(hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=160, num_hidden_layers=2, vocab_size=VOCAB_PAD,
                       max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, initializer_range=0.1, bos_token_id=bos,
                       eos_token_id=eos, use_sliding_window=False, hidden_act="silu",
                       dtype="float32")
    qwen_d = Qwen2ForCausalLM(dcfg).eval()
    perturb_(qwen_d, torch.Generator().manual_seed(55))
    qwen_d = rounded(Qwen2ForCausalLM, dcfg, qwen_d, torch.bfloat16)
    out_d = ROOT / "tiny-qwen2-d64"
    shutil.rmtree(out_d, ignore_errors=True)
    copy.deepcopy(qwen_d).to(torch.bfloat16).save_pretrained(out_d, safe_serialization=True)
    set_top_level_rope_theta(out_d / "config.json", 10000.0)
    copy_tokenizer(tok_dir, out_d)
    shutil.copy(out / "generation_config.json", out_d)
    ref = make_reference(qwen_d, tok_size, seed=4, lengths=(1, 5, 17, 70))
    write_json(out_d / "reference.json", ref)
    check_reload(out_d, ref)

    for d in (tok_dir, out, out_b, out_l, out_d):
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d.relative_to(ROOT.parent.parent)}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
