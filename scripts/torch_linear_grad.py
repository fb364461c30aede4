#!/usr/bin/python3
"""A frozen linear with a LoRA branch, differentiated by torch autograd, to check loracpp's
backward through every stored weight type against.

    torch_linear_grad.py IN.safetensors OUT.safetensors [IN OUT ...]

IN holds W F32 [out, in] (the frozen matrix as loracpp dequantizes it), x F32 [n, in],
A F32 [r, in], B F32 [out, r], upstream F32 [n, out], and metadata "scale". The function is
y = x W^T + scale (x A^T) B^T and the loss sum(y * upstream), in float64. OUT receives y and
grad.x, grad.A, grad.B (F32).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402
from torch_lora_grad import read_metadata, write_f32_safetensors  # noqa: E402


def run_case(in_path, out_path):
    data = ref.read_safetensors(in_path)
    scale = float(read_metadata(in_path)["scale"])
    t = {k: torch.from_numpy(data[k]).double() for k in ("W", "x", "A", "B", "upstream")}
    x, a, b = (t[k].requires_grad_() for k in ("x", "A", "B"))
    y = x @ t["W"].T + scale * (x @ a.T) @ b.T
    (y * t["upstream"]).sum().backward()
    write_f32_safetensors(out_path, {"y": y.detach().float().numpy(),
                                     "grad.x": x.grad.float().numpy(),
                                     "grad.A": a.grad.float().numpy(),
                                     "grad.B": b.grad.float().numpy()})


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for i in range(0, len(args), 2):
        run_case(args[i], args[i + 1])


if __name__ == "__main__":
    main()
