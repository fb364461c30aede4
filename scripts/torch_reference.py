#!/usr/bin/python3
"""Reference forward pass of a Llama-family model in plain torch, for checking loracpp against.

Reads a Hugging Face model folder (config.json + model.safetensors or a sharded
model.safetensors.index.json) of model_type llama, mistral, qwen2 (q/k/v biases) or qwen3
(q_norm/k_norm). Weights stored as F32/F16/BF16 are widened to float32; MLX-quantized weights
(`weight` uint32 + `scales` + `biases`) are dequantized (w = scale * q + bias) to float32.
Everything runs in float32. The forward is differentiable: nothing in it disables autograd.

Python API (import with sys.path including scripts/):
    import torch_reference as ref
    model = ref.load(model_dir)                  # Model: .cfg (dict), .w (name -> float32 tensor)
    logits = ref.forward(model, ids)             # ids: list/1-D LongTensor [T] or 2-D [B, T]
                                                 # -> logits [T, vocab] or [B, T, vocab]
    logits = ref.forward(model, ids, lora=lora)  # with LoRA branches, see below
    loss = ref.loss(model, ids, lora=lora)       # mean next-token cross-entropy over ids[1:]

    lora: dict {(layer, proj): (A, B, scale)} (or (A, B, scale, m) for DoRA) with proj one of q_proj k_proj v_proj o_proj
          gate_proj up_proj down_proj, A [r, in], B [out, r] float32 tensors (may require grad).
          The projection becomes base(x) + scale * (x A^T) B^T.
    Gradients: make model.w[name].requires_grad_() or pass A/B with requires_grad=True, then
          call .backward() on anything computed from forward().

CLI:
    torch_reference.py MODEL_DIR... --ids 1 2 3 ...   prints one JSON line per model:
                                                      {"model", "ids", "logits" [T][vocab], "loss"}
    torch_reference.py MODEL_DIR --greedy N [--bos ID]   greedy-decodes N tokens, prints the ids
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

PROJS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJ_PATH = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
             "v_proj": "self_attn.v_proj", "o_proj": "self_attn.o_proj",
             "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")

_NP_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "U32": "<u4", "I32": "<i4",
              "I64": "<i8", "U8": "u1", "I8": "i1", "I16": "<i2", "BOOL": "u1"}


def read_safetensors(path):
    """name -> numpy array (BF16 widened to float32); other dtypes as stored."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_NP_DTYPES[e["dtype"]])
        out[name] = arr.reshape(e["shape"]).copy()
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        shards = sorted(set(json.load(open(index))["weight_map"].values()))
        out = {}
        for s in shards:
            out.update(read_safetensors(os.path.join(model_dir, s)))
        return out
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


def unpack_bits(words, bits, count):
    """uint32 words [rows, W] -> codes [rows, count]; values packed low bits first as one
    little-endian bit stream (so 3/5/6-bit values may straddle words)."""
    rows = words.shape[0]
    as_bytes = words.astype("<u4").view(np.uint8).reshape(rows, -1)
    bitstream = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, : count * bits]
    weights = (1 << np.arange(bits, dtype=np.uint32))
    return (bitstream.reshape(rows, count, bits).astype(np.uint32) * weights).sum(-1)


def dequantize(words, scales, biases, bits):
    """MLX affine: w = scale * q + bias per group; the group size follows from the shapes."""
    rows, groups = scales.shape
    in_features = words.shape[1] * 32 // bits
    gs = in_features // groups
    q = unpack_bits(words, bits, in_features).astype(np.float32).reshape(rows, groups, gs)
    w = scales.astype(np.float32)[:, :, None] * q + biases.astype(np.float32)[:, :, None]
    return w.reshape(rows, in_features)


def quant_bits(cfg, module):
    """Bits of an MLX-quantized module: a per-module override in "quantization", else the default."""
    q = cfg.get("quantization") or {}
    override = q.get(module)
    return override["bits"] if isinstance(override, dict) else q["bits"]


class Model:
    def __init__(self, cfg, w):
        self.cfg = cfg
        self.w = w


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if cfg.get("model_type") not in SUPPORTED:
        raise ValueError("unsupported model_type %r" % cfg.get("model_type"))
    raw = read_weights(model_dir)
    w = {}
    for name, arr in raw.items():
        if name.endswith(".scales") or name.endswith(".biases"):
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is not None and base + ".scales" in raw:
            arr = dequantize(arr, raw[base + ".scales"], raw[base + ".biases"], quant_bits(cfg, base))
        w[name] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return Model(cfg, w)


def rope_inv_freq(cfg, head_dim):
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = cfg.get("rope_scaling")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor, lo, hi = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        old = rs.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def _rmsnorm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(model, ids, lora=None):
    """Logits for ids [T] -> [T, vocab], or [B, T] -> [B, T, vocab]."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    single = ids.dim() == 1
    if single:
        ids = ids[None]
    c, w = model.cfg, model.w
    lora = lora or {}
    B, T = ids.shape
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads") or nh
    hd = c.get("head_dim") or c["hidden_size"] // nh
    eps = c.get("rms_norm_eps", 1e-6)
    qwen2 = c["model_type"] == "qwen2"
    bias = qwen2 or c.get("attention_bias", False)
    qk_norm = c["model_type"] == "qwen3"

    inv = rope_inv_freq(c, hd)
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)

    def linear(x, layer, proj):
        name = "model.layers.%d.%s" % (layer, PROJ_PATH[proj])
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        if (layer, proj) in lora:
            A, Bm, scale = lora[(layer, proj)][:3]
            low = scale * ((x @ A.T) @ Bm.T)
            if len(lora[(layer, proj)]) == 3:
                return y + low
            # DoRA as PEFT's DoraLinearLayer (no dropout): the base output plus
            # (g - 1) * base + g * low, g = m / ||W + scale B A|| per row, the norm detached.
            m = lora[(layer, proj)][3]
            W = w[name + ".weight"]
            g = m / (W + scale * (Bm @ A)).norm(p=2, dim=1).detach()
            base = x @ W.T
            y = y + (g - 1) * base + g * low
        return y

    x = w["model.embed_tokens.weight"][ids]  # [B, T, D]
    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = _rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, l, "q_proj").view(B, T, nh, hd)
        k = linear(h, l, "k_proj").view(B, T, nkv, hd)
        v = linear(h, l, "v_proj").view(B, T, nkv, hd)
        if qk_norm:
            q = _rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = _rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, hd]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(o, l, "o_proj")
        h = _rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(linear(h, l, "gate_proj"))
        x = x + linear(g * linear(h, l, "up_proj"), l, "down_proj")
    x = _rmsnorm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    logits = x @ head.T
    return logits[0] if single else logits


def loss(model, ids, lora=None):
    ids = torch.as_tensor(ids, dtype=torch.long)
    logits = forward(model, ids, lora)
    return torch.nn.functional.cross_entropy(logits[:-1], ids[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dirs", nargs="+")
    ap.add_argument("--ids", type=int, nargs="+")
    ap.add_argument("--greedy", type=int)
    ap.add_argument("--bos", type=int)
    args = ap.parse_args()
    with torch.no_grad():
        for model_dir in args.model_dirs:
            m = load(model_dir)
            if args.ids:
                logits = forward(m, args.ids)
                out = {"model": model_dir, "ids": args.ids, "logits": logits.tolist()}
                if len(args.ids) > 1:
                    out["loss"] = float(loss(m, args.ids))
                print(json.dumps(out))
            elif args.greedy:
                bos = args.bos if args.bos is not None else m.cfg.get("bos_token_id", 1)
                ids = [bos]
                for _ in range(args.greedy):
                    ids.append(int(torch.argmax(forward(m, ids)[-1])))
                print(" ".join(map(str, ids[1:])))
            else:
                ap.error("give --ids or --greedy")


if __name__ == "__main__":
    main()
