#!/usr/bin/python3
"""Reference forward pass of a Llama-family model in plain torch, for checking loracpp against.

Reads a Hugging Face model folder (config.json + model.safetensors or a sharded
model.safetensors.index.json) of model_type llama, mistral, qwen2 (q/k/v biases), qwen3
(q_norm/k_norm), gemma2, gemma3_text, gemma3 (its text model), smollm3 or phi3. The families follow
the modeling code of Hugging Face transformers v4.56 (modeling_gemma2.py, modeling_gemma3.py,
modeling_smollm3.py, modeling_phi3.py, modeling_rope_utils.py, and masking_utils.py for sliding
windows: a query at position i sees keys j with i - window < j <= i): Gemma's (1 + weight) RMSNorm,
sqrt(hidden) embedding scale in the checkpoint's dtype, tanh-GELU MLP, four norms per block,
query_pre_attn_scalar, attention and final logit soft-capping, per-layer sliding windows and RoPE
bases, SmolLM3's no_rope_layers; Phi-3's fused qkv_proj ([q; k; v] rows) and gate_up_proj ([gate;
up] rows, chunked in two), partial_rotary_factor (RoPE on the first int(head_dim * factor)
features of each head) and longrope rope_scaling (short_factor, or long_factor when the sequence
is longer than original_max_position_embeddings; cos and sin times the attention factor). Weights stored as F32/F16/BF16 are widened to float32; MLX-quantized weights
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
          gate_proj up_proj down_proj (phi3: qkv_proj o_proj gate_up_proj down_proj, the fused
          linears as PEFT adapts them), A [r, in], B [out, r] float32 tensors (may require grad).
          The projection becomes base(x) + scale * (x A^T) B^T.
    Gradients: make model.w[name].requires_grad_() or pass A/B with requires_grad=True, then
          call .backward() on anything computed from forward().

CLI:
    torch_reference.py MODEL_DIR... --ids 1 2 3 ...   prints one JSON line per model:
                                                      {"model", "ids", "logits" [T][vocab], "loss"}
    torch_reference.py MODEL_DIR --greedy N [--bos ID]   greedy-decodes N tokens, prints the ids
    --peft ADAPTER_DIR   applies a PEFT LoRA adapter (adapter_model.safetensors) as PEFT does:
                         each lora_A/lora_B pair on the module it names, scale lora_alpha / r
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
             "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj",
             "qkv_proj": "self_attn.qkv_proj", "gate_up_proj": "mlp.gate_up_proj"}
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "smollm3",
             "phi3")
GEMMA = ("gemma2", "gemma3_text", "gemma3")

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
    def __init__(self, cfg, w, embed_dtype="F32"):
        self.cfg = cfg
        self.w = w
        self.embed_dtype = embed_dtype  # how the embedding is stored (scales' dtype if quantized)


def stored_dtypes(model_dir):
    """name -> safetensors dtype string, from the headers alone."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    out = {}
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        out.update({k: v["dtype"] for k, v in header.items()})
    return out


def text_config(cfg):
    """A gemma3 (vision + text) config's text model fields, with the top-level ones added."""
    if cfg.get("model_type") != "gemma3":
        return cfg
    t = dict(cfg["text_config"])
    for k, v in cfg.items():
        if k not in ("text_config", "vision_config") and k not in t:
            t[k] = v
    t["model_type"] = "gemma3"
    return t


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if cfg.get("model_type") not in SUPPORTED:
        raise ValueError("unsupported model_type %r" % cfg.get("model_type"))
    cfg = text_config(cfg)
    raw = read_weights(model_dir)
    w = {}
    for name, arr in raw.items():
        if name.endswith(".scales") or name.endswith(".biases"):
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is not None and base + ".scales" in raw:
            arr = dequantize(arr, raw[base + ".scales"], raw[base + ".biases"], quant_bits(cfg, base))
        w[name] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    # Text model tensors under one prefix: "model." (gemma3 checkpoints: language_model.model.).
    for prefix in ("language_model.model.", "model.language_model."):
        if prefix + "embed_tokens.weight" in w:
            w = {("model." + k[len(prefix):] if k.startswith(prefix) else
                  k.replace("language_model.lm_head", "lm_head")): v for k, v in w.items()}
    dtypes = stored_dtypes(model_dir)
    embed = next(k for k in dtypes if k.endswith("embed_tokens.weight"))
    embed_dtype = dtypes.get(embed[: -len("weight")] + "scales", dtypes[embed])
    return Model(cfg, w, embed_dtype)


def rope_inv_freq(cfg, dim, local=False, seq_len=None):
    """Frequencies of the first `dim` (rotary) features of a head. Gemma 3's sliding layers (local)
    use rope_local_base_freq without scaling; longrope picks long_factor for seq_len beyond
    original_max_position_embeddings."""
    gemma3 = cfg["model_type"] in ("gemma3", "gemma3_text")
    theta = float(cfg.get("rope_theta", 1000000.0 if gemma3 else 10000.0))
    if local:
        theta = float(cfg.get("rope_local_base_freq", 10000.0))
    rs = None if local else cfg.get("rope_scaling")
    kind = rs and (rs.get("rope_type") or rs.get("type"))
    if kind in ("longrope", "su"):
        original = longrope_original_max(cfg)
        ext = rs["long_factor"] if seq_len and seq_len > original else rs["short_factor"]
        shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return 1.0 / (torch.tensor(ext, dtype=torch.float32) * theta ** shape)
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if kind == "linear":
        inv = inv / rs["factor"]
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        old = rs.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def longrope_original_max(cfg):
    """Phi3Config has original_max_position_embeddings = 4096 even when config.json omits it."""
    if cfg["model_type"] == "phi3":
        return cfg.get("original_max_position_embeddings", 4096)
    return cfg.get("original_max_position_embeddings") or cfg.get("max_position_embeddings", 2048)


def rope_attention_factor(cfg):
    """longrope's scaling of cos and sin (modeling_rope_utils._compute_longrope_parameters)."""
    rs = cfg.get("rope_scaling")
    if not rs or (rs.get("rope_type") or rs.get("type")) not in ("longrope", "su"):
        return 1.0
    if rs.get("attention_factor") is not None:
        return rs["attention_factor"]
    if cfg.get("original_max_position_embeddings") or cfg["model_type"] == "phi3":
        factor = cfg["max_position_embeddings"] / longrope_original_max(cfg)
    else:
        factor = rs.get("factor", 1.0)
    original = longrope_original_max(cfg)
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


def _rmsnorm(x, weight, eps, plus_one=False):
    """Gemma's RMSNorm multiplies by (1 + weight)."""
    return (1.0 + weight if plus_one else weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)
                                                                    + eps))


_TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16}


def round_to(x, dtype_name):
    """x rounded to a stored dtype (BF16/F16) and back to float32; F32 unchanged."""
    t = _TORCH_DTYPES.get(dtype_name)
    return x if t is None else x.to(t).float()


def sliding_layers(c):
    """Per layer: True where attention goes through the sliding window (transformers' rules)."""
    n, window = c["num_hidden_layers"], c.get("sliding_window", 4096 if c["model_type"] in GEMMA
                                              else None)
    if not window:
        return [False] * n
    if c.get("layer_types"):
        return [t == "sliding_attention" for t in c["layer_types"]]
    t = c["model_type"]
    if t in ("gemma3", "gemma3_text"):
        pattern = c.get("sliding_window_pattern", c.get("_sliding_window_pattern", 6))
        return [(i + 1) % pattern != 0 for i in range(n)]
    if t == "gemma2":
        return [i % 2 == 0 for i in range(n)]
    if t in ("mistral", "phi3"):
        return [True] * n
    if c.get("use_sliding_window"):
        return [i >= c.get("max_window_layers", 0) for i in range(n)]
    return [False] * n


def causal_mask(T, window=None):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window:
        visible = visible & (j > i - window)
    return torch.zeros(T, T).masked_fill(~visible, float("-inf"))


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
    t = c["model_type"]
    gemma = t in GEMMA
    qwen2 = t == "qwen2"
    bias = qwen2 or c.get("attention_bias", False)
    qk_norm = t in ("qwen3", "gemma3", "gemma3_text")
    if gemma:
        hd = c.get("head_dim", 256)
        act = c.get("hidden_activation") or "gelu_pytorch_tanh"
    else:
        act = c.get("hidden_act", "silu")
    assert act in ("silu", "gelu_pytorch_tanh"), act
    scale = (c.get("query_pre_attn_scalar", 256) if gemma else hd) ** -0.5
    default_cap = (50.0, 30.0) if t == "gemma2" else (None, None)
    attn_cap = c.get("attn_logit_softcapping", default_cap[0]) if gemma else None
    final_cap = c.get("final_logit_softcapping", default_cap[1]) if gemma else None
    sliding = sliding_layers(c)
    window = c.get("sliding_window", 4096 if gemma else None)
    rope_on = c.get("no_rope_layers") if t == "smollm3" else None
    if t == "smollm3" and rope_on is None:
        rope_on = [int((i + 1) % c.get("no_rope_layer_interval", 4) != 0)
                   for i in range(c["num_hidden_layers"])]
    tie = c.get("tie_word_embeddings", gemma)

    def norm(x, name):
        return _rmsnorm(x, w[name], eps, plus_one=gemma)

    rotary = int(hd * c.get("partial_rotary_factor", 1.0))
    fused = t == "phi3"

    def cos_sin(local):
        inv = rope_inv_freq(c, rotary, local, seq_len=T)
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        factor = 1.0 if local else rope_attention_factor(c)
        return emb.cos() * factor, emb.sin() * factor

    def rotate(z, cos, sin):  # the first `rotary` features of each head; the rest pass through
        rot, rest = z[..., :rotary], z[..., rotary:]
        return torch.cat((rot * cos + _rotate_half(rot) * sin, rest), dim=-1)

    rope_global = cos_sin(False)
    rope_local = cos_sin(True) if t in ("gemma3", "gemma3_text") else rope_global

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
    if gemma:  # the scale and the product in the checkpoint's dtype, as transformers computes it
        normalizer = round_to(torch.tensor(c["hidden_size"] ** 0.5, dtype=torch.float32),
                              model.embed_dtype)
        x = round_to(x * normalizer, model.embed_dtype)
    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = norm(x, p + "input_layernorm.weight")
        if fused:
            qkv = linear(h, l, "qkv_proj")
            q, k, v = qkv[..., :nh * hd], qkv[..., nh * hd:(nh + nkv) * hd], qkv[..., (nh + nkv) * hd:]
        else:
            q, k, v = linear(h, l, "q_proj"), linear(h, l, "k_proj"), linear(h, l, "v_proj")
        q, k, v = q.reshape(B, T, nh, hd), k.reshape(B, T, nkv, hd), v.reshape(B, T, nkv, hd)
        if qk_norm:
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, heads, T, hd]
        if rope_on is None or rope_on[l]:
            cos, sin = rope_local if sliding[l] else rope_global
            q = rotate(q, cos, sin)
            k = rotate(k, cos, sin)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) * scale
        if attn_cap:
            scores = torch.tanh(scores / attn_cap) * attn_cap
        att = torch.softmax(scores + causal_mask(T, window if sliding[l] else None), dim=-1)
        o = linear((att @ v).transpose(1, 2).reshape(B, T, nh * hd), l, "o_proj")
        if gemma:
            x = x + norm(o, p + "post_attention_layernorm.weight")
            h = norm(x, p + "pre_feedforward_layernorm.weight")
        else:
            x = x + o
            h = norm(x, p + "post_attention_layernorm.weight")
        if fused:
            gate, up = linear(h, l, "gate_up_proj").chunk(2, dim=-1)
        else:
            gate, up = linear(h, l, "gate_proj"), linear(h, l, "up_proj")
        gate = (torch.nn.functional.silu(gate) if act == "silu"
                else torch.nn.functional.gelu(gate, approximate="tanh"))
        m = linear(gate * up, l, "down_proj")
        x = x + (norm(m, p + "post_feedforward_layernorm.weight") if gemma else m)
    x = norm(x, "model.norm.weight")
    head = w["model.embed_tokens.weight"] if tie else w["lm_head.weight"]
    logits = x @ head.T
    if final_cap:
        logits = torch.tanh(logits / final_cap) * final_cap
    return logits[0] if single else logits


def loss(model, ids, lora=None):
    ids = torch.as_tensor(ids, dtype=torch.long)
    logits = forward(model, ids, lora)
    return torch.nn.functional.cross_entropy(logits[:-1], ids[1:])


def read_peft(adapter_dir):
    """A PEFT LoRA adapter as a `lora` dict: base + (lora_alpha / r) * B(A(x)) on each module it
    adapts (no rank/alpha patterns, no DoRA)."""
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    lora = {}
    for name, a in tensors.items():
        if ".lora_A." not in name:
            continue
        module = name.split(".lora_A.")[0]
        parts = module.split(".")
        layer = int(parts[parts.index("layers") + 1])
        b = tensors[module + ".lora_B.weight"]
        lora[(layer, parts[-1])] = (torch.from_numpy(a.astype(np.float32)),
                                    torch.from_numpy(b.astype(np.float32)), scale)
    return lora


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peft", help="a PEFT LoRA adapter folder to apply")
    ap.add_argument("model_dirs", nargs="+")
    ap.add_argument("--ids", type=int, nargs="+")
    ap.add_argument("--greedy", type=int)
    ap.add_argument("--bos", type=int)
    args = ap.parse_args()
    with torch.no_grad():
        for model_dir in args.model_dirs:
            m = load(model_dir)
            lora = read_peft(args.peft) if args.peft else None
            if args.ids:
                logits = forward(m, args.ids, lora=lora)
                out = {"model": model_dir, "ids": args.ids, "logits": logits.tolist()}
                if len(args.ids) > 1:
                    out["loss"] = float(loss(m, args.ids, lora=lora))
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
