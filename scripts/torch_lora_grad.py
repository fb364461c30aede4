#!/usr/bin/python3
"""LoRA loss and gradients computed by torch autograd, to check loracpp's backward against.

    torch_lora_grad.py --case MODEL_DIR IN.safetensors OUT.safetensors [--case ...]

IN holds the batch and the adapter:
    ids, targets    I32 [batch, seq]   next-token targets per position
    weights         F32 [batch, seq]   per-token loss weight (0 = masked)
    lora.{layer}.{proj}.A  F32 [r, in]   lora.{layer}.{proj}.B  F32 [out, r]
    lora.{layer}.{proj}.m  F32 [out]     (DoRA only: the magnitude; PEFT's DoRA formulas)
    metadata "scale": the LoRA scale of every module
The loss is sum(weights * CE(logits, targets)) / sum(weights) (token-weighted mean over the
unmasked targets). OUT receives `loss` F32 [1] and grad.{layer}.{proj}.A / .B (/ .m) (F32), the gradients
of that loss. The model runs through scripts/torch_reference.py (float32; an MLX-quantized base is
dequantized, so a 4-bit model is compared on its dequantized weights).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402


def read_metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


def write_f32_safetensors(path, tensors):
    """name -> float32 numpy array; sorted names, header padded to a multiple of 8."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def run_case(model_dir, in_path, out_path):
    model = ref.load(model_dir)
    data = ref.read_safetensors(in_path)
    scale = float(read_metadata(in_path)["scale"])
    ids = torch.from_numpy(data["ids"].astype(np.int64))
    targets = torch.from_numpy(data["targets"].astype(np.int64))
    weights = torch.from_numpy(data["weights"].astype(np.float32))
    lora, params = {}, {}
    for name in data:
        if not name.startswith("lora.") or not name.endswith(".A"):
            continue
        _, layer, proj, _ = name.split(".")
        a = torch.from_numpy(data[name]).requires_grad_()
        b = torch.from_numpy(data["lora.%s.%s.B" % (layer, proj)]).requires_grad_()
        m_name = "lora.%s.%s.m" % (layer, proj)
        if m_name in data:  # DoRA
            m = torch.from_numpy(data[m_name]).requires_grad_()
            lora[(int(layer), proj)] = (a, b, scale, m)
            params["%s.%s" % (layer, proj)] = (a, b, m)
        else:
            lora[(int(layer), proj)] = (a, b, scale)
            params["%s.%s" % (layer, proj)] = (a, b)
    logits = ref.forward(model, ids, lora=lora)  # [batch, seq, vocab]
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    loss = (token_loss * weights.reshape(-1)).sum() / weights.sum()
    loss.backward()
    out = {"loss": np.array([loss.item()], dtype=np.float32)}
    for key, tensors in params.items():
        out["grad.%s.A" % key] = tensors[0].grad.numpy()
        out["grad.%s.B" % key] = tensors[1].grad.numpy()
        if len(tensors) == 3:
            out["grad.%s.m" % key] = tensors[2].grad.numpy()
    write_f32_safetensors(out_path, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", nargs=3, action="append", required=True,
                    metavar=("MODEL_DIR", "IN", "OUT"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for model_dir, in_path, out_path in args.case:
        run_case(model_dir, in_path, out_path)


if __name__ == "__main__":
    main()
