#!/usr/bin/env python3
"""Runs the LoRA training benchmark side by side with PyTorch and writes one JSON file.

In one run: the sgemm peak of this machine (build/bench/sgemm_peak), our trainer on each
configuration (build/bench/train_throughput, one process per configuration so each peak RSS is its
own), and the PyTorch f32 eager baseline (scripts/torch_train_bench.py under Debian's python3 with
torch) on the same shapes, LoRA and batch. Prints a table with tokens/s, the ratio to PyTorch
(with glibc's default heap, and with the heap tuned as ours is), model FLOPs utilisation against the
measured sgemm peak, peak RSS, and peak RSS over the floor (base as stored + LoRA state + the
activations backward needs).

  scripts/bench_train.py                      full matrix, batch 4 x 512 (about 40 minutes on 2 cores)
  scripts/bench_train.py --quick              seq 128, q4 base only, no torch Qwen (a smoke run)
  scripts/bench_train.py --shapes smollm2-135m --bases q4 --compute f32,bf16 --profile
Options: --build DIR (default build), --out FILE (default out/bench/train_throughput.json),
--batch, --seq, --steps, --warmup, --threads, --layers, --ckpt off,on, --bf16-ckpt off,
--torch-heaps default,reuse, --no-torch.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd, env=None):
    """Runs cmd, echoes its stderr, returns the JSON object on the last line of stdout."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}", "cmd": cmd}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no JSON output", "cmd": cmd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench", "train_throughput.json"))
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b,gemma3-270m")
    ap.add_argument("--bases", default="f32,bf16,q4")
    ap.add_argument("--compute", default="f32,bf16", help="compute dtypes of the frozen matmuls")
    ap.add_argument("--ckpt", default="off,on", help="gradient checkpointing settings to run")
    ap.add_argument("--bf16-ckpt", default="off",
                    help="checkpointing settings for the bf16-compute runs (memory does not "
                         "depend on the compute dtype)")
    ap.add_argument("--torch-heaps", default="default,reuse",
                    help="PyTorch baselines: glibc's default heap, and/or the heap tuned the way "
                         "ours is (MALLOC_MMAP_MAX_=0, no trim), so the ratio is not only malloc")
    ap.add_argument("--torch-reuse-heap-shapes", default="smollm2-135m",
                    help="shapes that get the tuned-heap PyTorch run: Qwen2.5-0.5B already peaks "
                         "at about 20 GiB with the default heap, and a heap that never shrinks "
                         "would pass this 24 GiB machine")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=0,
                    help="override the layer count of both shapes, ours and torch (quick runs)")
    ap.add_argument("--profile", action="store_true", help="per-op time split of every run")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seq, args.bases, args.ckpt = 128, "q4", "off"

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    bench = os.path.join(args.build, "bench")
    started = time.time()
    peak = run_json([os.path.join(bench, "sgemm_peak"), "--tokens", str(args.batch * args.seq)],
                    env)
    peak_gflops = peak.get("peak_gflops")

    results = {"machine": {"threads": args.threads, "sgemm_peak": peak}, "runs": [], "torch": {},
               "torch_reuse_heap": {}}
    heap_env = dict(env, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
    for shape in args.shapes.split(","):
        for heap in ([] if args.no_torch else args.torch_heaps.split(",")):
            if heap == "reuse" and shape not in args.torch_reuse_heap_shapes.split(","):
                continue
            key = "torch" if heap == "default" else "torch_reuse_heap"
            results[key][shape] = run_json(
                ["/usr/bin/python3", os.path.join(ROOT, "scripts", "torch_train_bench.py"),
                 "--shape", shape, "--batch", str(args.batch), "--seq", str(args.seq),
                 "--threads", str(args.threads), "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--layers", str(args.layers)],
                env if heap == "default" else heap_env)
        for base in args.bases.split(","):
            for compute in args.compute.split(","):
                for ckpt in (args.bf16_ckpt if compute == "bf16" else args.ckpt).split(","):
                    cmd = [os.path.join(bench, "train_throughput"), "--shape", shape,
                           "--base", base, "--compute-dtype", compute,
                           "--batch", str(args.batch), "--seq", str(args.seq),
                           "--steps", str(args.steps), "--warmup", str(args.warmup),
                           "--layers", str(args.layers)]
                    if ckpt == "on":
                        cmd.append("--grad-checkpoint")
                    if args.profile:
                        cmd.append("--profile")
                    results["runs"].append(run_json(cmd, env))

    rows = []
    for r in results["runs"]:
        if "error" in r:
            rows.append(f"  {' '.join(r['cmd'][1:])}: {r['error']}")
            continue
        def ratio_to(key):
            t = results[key].get(r["shape"], {})
            return r["tokens_per_s"] / t["tokens_per_s"] if t.get("tokens_per_s") else None
        ratio, ratio_heap = ratio_to("torch"), ratio_to("torch_reuse_heap")
        mfu = r["achieved_gflops"] / peak_gflops if peak_gflops else None
        r["ratio_vs_torch"] = ratio
        r["ratio_vs_torch_reuse_heap"] = ratio_heap
        r["mfu_vs_sgemm_peak"] = mfu
        fmt = lambda x: "%.2fx" % x if x else "-"
        rows.append("  %-13s %-4s %-4s %-4s %9.1f %9s %9s %7s %8.0f %7s" % (
            r["shape"], r["base"], r["compute_dtype"], "on" if r["grad_checkpoint"] else "off",
            r["tokens_per_s"], fmt(ratio), fmt(ratio_heap),
            "%.0f%%" % (100 * mfu) if mfu else "-", r["peak_rss_mib"],
            fmt(r.get("rss_over_floor"))))
    results["elapsed_s"] = time.time() - started
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)

    print(f"threads {args.threads}, batch {args.batch} x {args.seq}, sgemm peak "
          f"{peak_gflops} GFLOP/s")
    for key, label in (("torch", "default heap"), ("torch_reuse_heap", "reused heap")):
        for shape, t in results[key].items():
            if "tokens_per_s" in t:
                print(f"  torch f32 eager ({label}) {shape}: {t['tokens_per_s']:.1f} tokens/s, "
                      f"peak RSS {t['peak_rss_mib']:.0f} MiB")
            else:
                print(f"  torch f32 eager ({label}) {shape}: {t.get('error')}")
    print("  %-13s %-4s %-4s %-4s %9s %9s %9s %7s %8s %7s" % (
        "shape", "base", "comp", "ckpt", "tokens/s", "vs torch", "vs t.heap", "MFU", "RSS MiB",
        "/floor"))
    print("\n".join(rows))
    print(f"written {args.out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
