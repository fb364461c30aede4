#!/usr/bin/python3
"""Writes a small random Llama-family model in Hugging Face format (config.json +
model.safetensors), for tests that compare loracpp with scripts/torch_reference.py.

    make_random_model.py OUT_DIR --arch llama|mistral|qwen2|qwen3|gemma2|gemma3_text|gemma3|smollm3|phi3
        [--dtype f32|bf16|f16] [--tied] [--hidden 64] [--layers 2] [--heads 4] [--kv-heads 2]
        [--head-dim N] [--intermediate 96] [--vocab 256] [--seed 0] [--rope-theta 10000]
        [--llama3-rope | --linear-rope F] [--sliding-window N] [--layer-types sfs...]
        [--softcap ATTN FINAL] [--partial-rotary F] [--longrope ORIGINAL_MAX]
        [--quantize-bits 4 --q-group-size 32] [--tokenizer PATH/tokenizer.json]

Gemma (gemma2, gemma3_text, and gemma3: the text model nested under "text_config", tensors under
"language_model.model."): tanh-GELU MLP, the four norms per block stored as offsets from 1,
q/k norms (gemma3), query_pre_attn_scalar, soft-capping (gemma2: 50 / 30), sliding windows
(gemma3 local layers use rope_local_base_freq 10000). --sliding-window sets the window (also for
mistral); --layer-types gives one letter per layer, s(liding) or f(ull), written as "layer_types"
(without it gemma3 writes sliding_window_pattern 2, gemma2 alternates). smollm3 writes
no_rope_layers (every second layer without RoPE).
phi3: fused self_attn.qkv_proj ([q; k; v] rows) and mlp.gate_up_proj ([gate; up] rows);
--partial-rotary writes partial_rotary_factor; --longrope writes longrope rope_scaling (random
short_factor near 1 and long_factor between 1 and 8) with original_max_position_embeddings
ORIGINAL_MAX (max_position_embeddings stays 512, so the attention factor is
sqrt(1 + ln(512 / ORIGINAL_MAX) / ln(ORIGINAL_MAX))).

--quantize-bits writes the linears (and the embedding / untied head) in MLX affine format
(`weight` uint32, `scales`, `biases` in the model dtype) where the input size is divisible by the
group size, using MLX's quantizer rule, and adds "quantization" to config.json.
--tokenizer copies a tokenizer.json (and a tokenizer_config.json beside it, if any) into OUT_DIR.
--byte-tokenizer writes a byte-level BPE tokenizer.json of our own instead (no merges: one token per
UTF-8 byte, ids 3..258 after <unk>=0, <s>=1, </s>=2; needs --vocab >= 259), so a model made without
any downloaded files can still read and write text.
Needs only numpy.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

PROJ_PATHS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def to_bf16_bits(a):
    """float32 -> bf16 bit patterns, round to nearest even (as torch and MLX do)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def round_to(a, dtype):
    """The float32 value each element takes once stored as dtype."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "f32":
        return a
    if dtype == "f16":
        return a.astype(np.float16).astype(np.float32)
    return (to_bf16_bits(a).astype(np.uint32) << 16).view(np.float32)


def encode(a, dtype):
    """(safetensors dtype name, raw bytes) of a float array stored as dtype."""
    if dtype == "f32":
        return "F32", np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "f16":
        return "F16", np.ascontiguousarray(a, dtype=np.float32).astype("<f2").tobytes()
    return "BF16", to_bf16_bits(a).astype("<u2").tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> (dtype name, shape, raw bytes). Sorted names, header padded to 8."""
    header = {"__metadata__": metadata or {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        dt, shape, raw = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def pack_bits(codes, bits):
    """codes [rows, n] (< 2^bits) -> uint32 [rows, n*bits/32], low bits first, one bit stream."""
    rows, n = codes.shape
    bitstream = ((codes[:, :, None].astype(np.uint32) >> np.arange(bits, dtype=np.uint32)) & 1)
    packed_bytes = np.packbits(bitstream.reshape(rows, n * bits).astype(np.uint8), axis=1,
                               bitorder="little")
    return packed_bytes.view("<u4").reshape(rows, n * bits // 32)


def mlx_quantize(w, bits, group_size, dtype):
    """MLX's affine quantizer in float32; scales and biases rounded to the model dtype before q."""
    rows, cols = w.shape
    g = w.astype(np.float32).reshape(rows, cols // group_size, group_size)
    w_max, w_min = g.max(-1), g.min(-1)
    n_bins = np.float32((1 << bits) - 1)
    edge_is_min = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, np.float32(1e-7)).astype(np.float32)
    scale = np.where(edge_is_min, scale, -scale).astype(np.float32)
    edge = np.where(edge_is_min, w_min, w_max).astype(np.float32)
    q0 = np.rint(edge / scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(q0 != 0, edge / np.where(q0 != 0, q0, 1), scale).astype(np.float32)
    scale = round_to(scale, dtype)
    bias = round_to(edge, dtype)
    q = np.clip(np.rint((g - bias[:, :, None]) / scale[:, :, None]), 0, n_bins).astype(np.uint32)
    return pack_bits(q.reshape(rows, cols), bits), scale, bias


def byte_to_unicode():
    """The byte-level BPE alphabet: printable bytes map to themselves, the rest to U+0100 on."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) +
                 list(range(0xAE, 0xFF + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_byte_tokenizer(out_dir):
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for b, ch in byte_to_unicode().items():
        vocab[ch] = len(specials) + b
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, tok in enumerate(specials)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--arch", choices=["llama", "mistral", "qwen2", "qwen3", "gemma2",
                                       "gemma3_text", "gemma3", "smollm3", "phi3"],
                    default="llama")
    ap.add_argument("--partial-rotary", type=float, help="phi3: partial_rotary_factor")
    ap.add_argument("--longrope", type=int, metavar="ORIGINAL_MAX",
                    help="phi3: longrope rope_scaling with this original_max_position_embeddings")
    ap.add_argument("--sliding-window", type=int)
    ap.add_argument("--layer-types", help="one letter per layer: s (sliding) or f (full)")
    ap.add_argument("--linear-rope", type=float, help="add linear rope_scaling with this factor")
    ap.add_argument("--softcap", type=float, nargs=2, metavar=("ATTN", "FINAL"),
                    help="gemma2: attention and final logit soft-capping (default 50 30)")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--intermediate", type=int, default=96)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--llama3-rope", action="store_true", help="add llama3 rope_scaling")
    ap.add_argument("--quantize-bits", type=int, choices=[2, 3, 4, 5, 6, 8])
    ap.add_argument("--q-group-size", type=int, default=32, choices=[32, 64, 128])
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy into the folder")
    ap.add_argument("--byte-tokenizer", action="store_true",
                    help="write a byte-level tokenizer.json (one token per byte)")
    a = ap.parse_args()
    if a.byte_tokenizer and a.vocab < 259:
        ap.error("--byte-tokenizer needs --vocab >= 259")

    rng = np.random.default_rng(a.seed)
    hd = a.head_dim or a.hidden // a.heads
    gemma = a.arch.startswith("gemma")
    cfg = {
        "architectures": [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                           "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                           "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
                           "gemma3": "Gemma3ForConditionalGeneration",
                           "smollm3": "SmolLM3ForCausalLM", "phi3": "Phi3ForCausalLM"}[a.arch]],
        "model_type": a.arch, "hidden_size": a.hidden, "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "head_dim": hd, "vocab_size": a.vocab,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": a.rope_theta,
        "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": a.tied,
        "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[a.dtype],
    }
    if a.arch in ("llama", "qwen3", "phi3"):
        cfg["attention_bias"] = False
    if a.partial_rotary:
        cfg["partial_rotary_factor"] = a.partial_rotary
    if a.longrope:
        half = int(hd * (a.partial_rotary or 1.0)) // 2
        cfg["original_max_position_embeddings"] = a.longrope
        cfg["rope_scaling"] = {"type": "longrope",
                               "short_factor": [float(x) for x in 1.0 + rng.random(half) * 0.2],
                               "long_factor": [float(x) for x in np.sort(1.0 + rng.random(half) * 7)]}
    if a.llama3_rope:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    if a.linear_rope:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": a.linear_rope}
    if gemma:
        del cfg["hidden_act"]
        cfg.update({"hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": hd * 2,
                    "rms_norm_eps": 1e-6, "attention_bias": False})
        caps = (a.softcap or (50.0, 30.0)) if a.arch == "gemma2" else (None, None)
        cfg["attn_logit_softcapping"], cfg["final_logit_softcapping"] = caps
        if a.arch != "gemma2":
            cfg["rope_local_base_freq"] = 10000.0
            cfg["rope_theta"] = a.rope_theta if a.rope_theta != 10000.0 else 1000000.0
            if not a.layer_types:
                cfg["sliding_window_pattern"] = 2
    if a.sliding_window:
        cfg["sliding_window"] = a.sliding_window
    elif gemma or a.arch in ("mistral", "phi3"):
        cfg["sliding_window"] = None
    if a.layer_types:
        if len(a.layer_types) != a.layers or set(a.layer_types) - set("sf"):
            ap.error("--layer-types needs one s or f per layer")
        cfg["layer_types"] = ["sliding_attention" if t == "s" else "full_attention"
                              for t in a.layer_types]
    if a.arch == "smollm3":
        cfg["no_rope_layers"] = [int(i % 2 == 0) for i in range(a.layers)]
        cfg["attention_bias"] = False
    top = "language_model.model." if a.arch == "gemma3" else "model."
    # Shapes [out, in] of every matrix.
    mats = {top + "embed_tokens": (a.vocab, a.hidden)}
    if not a.tied:
        mats[("language_model." if a.arch == "gemma3" else "") + "lm_head"] = (a.vocab, a.hidden)
    vecs = {top + "norm.weight": a.hidden}
    q_out, kv_out = a.heads * hd, a.kv_heads * hd
    for i in range(a.layers):
        p = top + "layers.%d." % i
        shapes = dict(zip(PROJ_PATHS, [(q_out, a.hidden), (kv_out, a.hidden), (kv_out, a.hidden),
                                       (a.hidden, q_out), (a.intermediate, a.hidden),
                                       (a.intermediate, a.hidden), (a.hidden, a.intermediate)]))
        if a.arch == "phi3":  # fused as Phi-3 checkpoints store them
            for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "mlp.gate_proj", "mlp.up_proj"):
                del shapes[part]
            shapes["self_attn.qkv_proj"] = (q_out + 2 * kv_out, a.hidden)
            shapes["mlp.gate_up_proj"] = (2 * a.intermediate, a.hidden)
        for path, shape in shapes.items():
            mats[p + path] = shape
        vecs[p + "input_layernorm.weight"] = a.hidden
        vecs[p + "post_attention_layernorm.weight"] = a.hidden
        if a.arch == "qwen2":
            for n, size in (("q", q_out), ("k", kv_out), ("v", kv_out)):
                vecs[p + "self_attn.%s_proj.bias" % n] = size
        if a.arch in ("qwen3", "gemma3_text", "gemma3"):
            vecs[p + "self_attn.q_norm.weight"] = hd
            vecs[p + "self_attn.k_norm.weight"] = hd
        if gemma:
            vecs[p + "pre_feedforward_layernorm.weight"] = a.hidden
            vecs[p + "post_feedforward_layernorm.weight"] = a.hidden

    tensors = {}
    quantized_any = False
    for name in sorted(mats):
        rows, cols = mats[name]
        std = 1.0 if name.endswith("embed_tokens") else 1.0 / np.sqrt(cols)
        if gemma and name.endswith("embed_tokens"):
            std = 1.0 / np.sqrt(a.hidden)  # the forward multiplies by sqrt(hidden)
        w = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
        if a.quantize_bits and cols % a.q_group_size == 0:
            packed, scales, biases = mlx_quantize(round_to(w, a.dtype), a.quantize_bits,
                                                  a.q_group_size, a.dtype)
            tensors[name + ".weight"] = ("U32", packed.shape, packed.astype("<u4").tobytes())
            for suffix, v in ((".scales", scales), (".biases", biases)):
                dt, raw = encode(v, a.dtype)
                tensors[name + suffix] = (dt, v.shape, raw)
            quantized_any = True
        else:
            dt, raw = encode(w, a.dtype)
            tensors[name + ".weight"] = (dt, (rows, cols), raw)
    for name in sorted(vecs):
        size = vecs[name]
        if name.endswith(".bias") or gemma:  # Gemma norms are offsets from 1
            v = rng.standard_normal(size) * 0.1
        else:
            v = 1.0 + rng.standard_normal(size) * 0.1
        dt, raw = encode(v.astype(np.float32), a.dtype)
        tensors[name] = (dt, (size,), raw)
    if quantized_any:
        cfg["quantization"] = {"group_size": a.q_group_size, "bits": a.quantize_bits}

    if a.arch == "gemma3":  # the text model's fields move under text_config
        text = {k: cfg.pop(k) for k in list(cfg) if k not in
                ("architectures", "model_type", "bos_token_id", "eos_token_id", "torch_dtype",
                 "quantization", "tie_word_embeddings")}
        text["model_type"] = "gemma3_text"
        cfg["text_config"] = text
    os.makedirs(a.out_dir, exist_ok=True)
    write_safetensors(os.path.join(a.out_dir, "model.safetensors"), tensors)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if a.byte_tokenizer:
        write_byte_tokenizer(a.out_dir)
    if a.tokenizer:
        shutil.copy(a.tokenizer, os.path.join(a.out_dir, "tokenizer.json"))
        tc = os.path.join(os.path.dirname(a.tokenizer), "tokenizer_config.json")
        if os.path.exists(tc):
            shutil.copy(tc, os.path.join(a.out_dir, "tokenizer_config.json"))


if __name__ == "__main__":
    main()
