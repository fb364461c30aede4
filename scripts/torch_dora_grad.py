#!/usr/bin/python3
"""One DoRA linear computed the way PEFT's DoraLinearLayer computes it, with torch autograd, to
check loracpp's dora_linear against.

    torch_dora_grad.py IN.safetensors OUT.safetensors [IN OUT ...]

IN (F32): W [out, in] (the base's values; a quantized or bf16 base as loracpp dequantizes it),
bias [out], x [n, in], keep [n, in] (the dropout multipliers: 0 or 1/(1-p); all ones without
dropout), A [r, in], B [out, r], m [out], R [n, out]; metadata "scale" and "dropout" (0 or p).
The loss is sum(y * R). OUT receives y and the gradients grad.x, grad.A, grad.B, grad.m.

PEFT (tuners/lora/layer.py, dora.py): with dropout active in training, the base term of the DoRA
part is recomputed on the dropped input; the norm ||W + scale B A|| (per output row) is detached.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_lora_grad import read_metadata, write_f32_safetensors  # noqa: E402
import torch_reference as ref  # noqa: E402


def main(in_path, out_path):
    data = ref.read_safetensors(in_path)
    meta = read_metadata(in_path)
    scale = float(meta["scale"])
    dropout = float(meta["dropout"])
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=k in ("x", "A", "B", "m"))
         for k, v in data.items()}
    W, bias, x, keep, A, B, m, R = (t[k] for k in ("W", "bias", "x", "keep", "A", "B", "m", "R"))
    result = torch.nn.functional.linear(x, W, bias)  # the base layer
    lora_weight = B @ A
    weight_norm = (W + scale * lora_weight).norm(p=2, dim=1).detach()
    mag_norm_scale = (m / weight_norm).view(1, -1)
    if dropout > 0:
        xd = x * keep
        base_result = torch.nn.functional.linear(xd, W)
    else:
        xd = x
        base_result = result - bias
    lora_result = (xd @ A.t()) @ B.t()
    y = result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scale
    (y * R).sum().backward()
    out = {"y": y.detach().numpy()}
    for k in ("x", "A", "B", "m"):
        out["grad." + k] = t[k].grad.numpy()
    write_f32_safetensors(out_path, out)


if __name__ == "__main__":
    if len(sys.argv) < 3 or len(sys.argv) % 2 != 1:
        sys.exit(__doc__)
    for i in range(1, len(sys.argv), 2):
        main(sys.argv[i], sys.argv[i + 1])
