#!/usr/bin/env python3
"""PyTorch eager baseline for bench/train_throughput: the same Llama/Qwen2/Gemma 3 shapes with
random weights (scripts/bench_shapes.py), LoRA r=8 on all 7 projections, tied head, AdamW on the
LoRA weights only; f32, or with --dtype bf16 the forward and loss under torch.autocast("cpu", bf16).

gemma3-270m is Gemma 3's architecture as transformers' modeling_gemma3.py has it: embeddings
times sqrt(hidden), RMSNorm with (1 + weight), four norms per block, per-head q/k norms, scores
scaled by query_pre_attn_scalar^-0.5, GeGLU (tanh GELU), sliding-window attention (512 keys) with
RoPE base 10000 on five of every six layers and full attention with base 1e6 on the sixth, head_dim
256 and one KV head, a 262k vocabulary through the tied head.

Written the way a PyTorch user would (an HF-style eager model: full logits, then cross-entropy),
so the figure is what "plain PyTorch" gives on this machine. Prints one JSON object:
  {"shape", "conditions": {...}, "step_s": [...], "tokens_per_s", "blas_libs", "peak_rss_mib", ...}
"conditions" are what scripts/bench_train.py compares with our run before it prints a ratio;
"blas_libs" are the BLAS libraries this process mapped (so the OpenMP build can be checked).

Run with Debian's python (it has python3-torch):
  /usr/bin/python3 scripts/torch_train_bench.py --shape smollm2-135m --batch 4 --seq 512 --threads 2
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from bench_shapes import LORA_TARGETS, SHAPES


class LoraLinear(torch.nn.Module):
    """Frozen base weight plus the rank-first LoRA path (x A^T) B^T * scale."""

    def __init__(self, inp, out, rank, scale, bias):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out, inp) * 0.02, requires_grad=False)
        self.bias = torch.nn.Parameter(torch.randn(out) * 0.02, requires_grad=False) if bias else None
        bound = 1.0 / math.sqrt(inp)
        self.lora_A = torch.nn.Parameter(torch.empty(rank, inp).uniform_(-bound, bound))
        # B is zero in a fresh adapter; a small random B keeps every gradient path non-trivial
        # (it changes no cost).
        self.lora_B = torch.nn.Parameter(torch.randn(out, rank) * 0.01)
        self.scale = scale

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + (x @ self.lora_A.t()) @ self.lora_B.t() * self.scale


class RMSNorm(torch.nn.Module):
    """Gemma's (plus_one) stores the weight as an offset from 1, as its checkpoints do."""

    def __init__(self, dim, eps, plus_one=False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(dim) if plus_one else torch.ones(dim),
                                         requires_grad=False)
        self.eps = eps
        self.plus_one = plus_one

    def forward(self, x):
        w = 1.0 + self.weight if self.plus_one else self.weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(torch.nn.Module):
    def __init__(self, s, rank, scale, sliding=False):
        super().__init__()
        h, hd = s["hidden"], s.get("head_dim") or s["hidden"] // s["heads"]
        self.gemma = s.get("gemma", False)
        self.sliding = sliding
        self.heads, self.kv_heads, self.hd = s["heads"], s["kv_heads"], hd
        self.scale = (s["query_pre_attn_scalar"] if self.gemma else hd) ** -0.5
        self.input_norm = RMSNorm(h, s["eps"], self.gemma)
        self.post_norm = RMSNorm(h, s["eps"], self.gemma)
        if self.gemma:
            self.q_norm = RMSNorm(hd, s["eps"], True)
            self.k_norm = RMSNorm(hd, s["eps"], True)
            self.pre_ffn_norm = RMSNorm(h, s["eps"], True)
            self.post_ffn_norm = RMSNorm(h, s["eps"], True)
        self.q = LoraLinear(h, s["heads"] * hd, rank, scale, s["qkv_bias"])
        self.k = LoraLinear(h, s["kv_heads"] * hd, rank, scale, s["qkv_bias"])
        self.v = LoraLinear(h, s["kv_heads"] * hd, rank, scale, s["qkv_bias"])
        self.o = LoraLinear(s["heads"] * hd, h, rank, scale, False)
        self.gate = LoraLinear(h, s["inter"], rank, scale, False)
        self.up = LoraLinear(h, s["inter"], rank, scale, False)
        self.down = LoraLinear(s["inter"], h, rank, scale, False)

    def forward(self, x, rope, masks):
        b, t, _ = x.shape
        cos, sin = rope["local" if self.sliding else "global"]
        h = self.input_norm(x)
        q = self.q(h).view(b, t, self.heads, self.hd)
        k = self.k(h).view(b, t, self.kv_heads, self.hd)
        if self.gemma:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) * self.scale + masks["local" if self.sliding else "global"]
        attn = torch.softmax(scores, dim=-1) @ v
        o = self.o(attn.transpose(1, 2).reshape(b, t, -1))
        if not self.gemma:
            x = x + o
            h = self.post_norm(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))
        x = x + self.post_norm(o)
        h = self.pre_ffn_norm(x)
        m = self.down(F.gelu(self.gate(h), approximate="tanh") * self.up(h))
        return x + self.post_ffn_norm(m)


class Model(torch.nn.Module):
    def __init__(self, s, rank, alpha):
        super().__init__()
        self.s = s
        self.gemma = s.get("gemma", False)
        scale = alpha / rank
        self.embed = torch.nn.Parameter(torch.randn(s["vocab"], s["hidden"]) * 0.02,
                                        requires_grad=False)
        pattern = s.get("sliding_pattern", 0)
        self.blocks = torch.nn.ModuleList(
            Block(s, rank, scale, sliding=bool(pattern) and (i + 1) % pattern != 0)
            for i in range(s["layers"]))
        self.norm = RMSNorm(s["hidden"], s["eps"], self.gemma)
        hd = s.get("head_dim") or s["hidden"] // s["heads"]
        self.inv_freq = {"global": 1.0 / (s["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))}
        if "rope_local_theta" in s:
            self.inv_freq["local"] = 1.0 / (s["rope_local_theta"] **
                                            (torch.arange(0, hd, 2).float() / hd))
        else:
            self.inv_freq["local"] = self.inv_freq["global"]

    def forward(self, ids, targets):
        b, t = ids.shape
        x = F.embedding(ids, self.embed)
        if self.gemma:
            x = x * torch.tensor(self.s["hidden"] ** 0.5)
        rope = {}
        for kind, inv in self.inv_freq.items():
            freqs = torch.outer(torch.arange(t).float(), inv)
            emb = torch.cat((freqs, freqs), dim=-1)
            rope[kind] = (emb.cos()[None, None], emb.sin()[None, None])
        causal = torch.full((t, t), float("-inf")).triu(1)
        masks = {"global": causal, "local": causal}
        if self.s.get("sliding_window"):  # keys j with i - window < j <= i
            i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
            masks["local"] = causal.masked_fill(j <= i - self.s["sliding_window"], float("-inf"))
        for blk in self.blocks:
            x = blk(x, rope, masks)
        logits = self.norm(x) @ self.embed.t()  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def blas_libs():
    """The BLAS/LAPACK shared objects mapped into this process (from /proc/self/maps)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = path.rsplit("/", 1)[-1]
            if name.startswith(("libopenblas", "libblas", "liblapack", "libmkl", "libblis")):
                libs.add(path)
    return sorted(libs)


def blas_core():
    """The kernel family the mapped OpenBLAS chose (openblas_get_corename), or None."""
    import ctypes
    for path in blas_libs():
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return None


def allocator():
    """Which malloc serves this process: TCMalloc or jemalloc when preloaded, else glibc's."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    for name in ("tcmalloc", "jemalloc"):
        if "lib" + name in maps:
            return name
    return "glibc malloc"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.0, help="LoRA alpha (default 2 x rank, as ours)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="bf16: forward and loss under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = dict(SHAPES[args.shape])
    if args.layers > 0:
        shape["layers"] = args.layers
    model = Model(shape, args.rank, args.alpha or 2.0 * args.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, shape["vocab"], (args.batch, args.seq + 1))
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    step_s, losses = [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = model(inputs, targets)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if step >= args.warmup:
            step_s.append(dt)
        print(f"torch step {step}: {dt:.2f} s, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)

    tokens = args.batch * args.seq
    result = {
        "impl": "torch-%s-eager" % ("f32" if args.dtype == "f32" else "bf16-autocast"),
        "conditions": {"threads": torch.get_num_threads(), "batch": args.batch, "seq": args.seq,
                       "tokens_per_step": tokens, "layers": shape["layers"],
                       "lora_targets": LORA_TARGETS, "rank": args.rank, "dtype": args.dtype},
        "blas_libs": blas_libs(),
        "blas_core": blas_core(),
        "allocator": allocator(),
        "torch_version": torch.__version__,
        "shape": args.shape,
        "layers": shape["layers"],
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "step_s": step_s,
        "tokens_per_s": tokens / statistics.median(step_s),
        "peak_rss_mib": peak_rss_mib(),
        "trainable_params": sum(p.numel() for p in params),
        "losses": losses,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
