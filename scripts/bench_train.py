#!/usr/bin/env python3
"""Runs the LoRA training benchmark against PyTorch, alternating the two, and writes one JSON file.

Speed (the default): for each configuration (shape x compute dtype), our trainer
(build/bench/train_throughput) and the PyTorch eager baseline (scripts/torch_train_bench.py under
Debian's python3 with torch) run in turns, ours, torch, ours, torch ... (--rounds of each), so that
drift on a shared machine hits both. Each process does --warmup steps and then --steps timed
steps; a side's figure is the median of all its timed steps. PyTorch runs with Debian's OpenMP
OpenBLAS (LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp; the pthread build fights
torch's own OpenMP threads), on TCMalloc (--torch-malloc glibc for plain malloc) and the same
threads; the libraries each process mapped are read from /proc/PID/maps and kept in the JSON, and
a ratio needs both sides on the same OpenBLAS kernels. Neither side inherits OPENBLAS_CORETYPE,
ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA from the environment (--env sets them). f32 compute is
compared with PyTorch f32 eager, bf16 compute with PyTorch's bf16 autocast, the latter only where
the CPU has bf16 units (avx512_bf16 or amx_bf16 in /proc/cpuinfo). Both sides report their
conditions (threads, batch, seq, tokens per step, layers, LoRA targets and rank, dtype); where they
differ no ratio is printed, and the difference is. The sgemm peak (build/bench/sgemm_peak) is
measured before and after; MFU is against the higher of the two. Every run of ours also splits its step by class of work (frozen products
forward and input gradient, LoRA products, the cross-entropy head, attention, norms/RoPE/
elementwise, optimizer) with the GFLOP/s each class achieved: "op_classes" in the JSON, and under
each row of the printed table.

Memory (--memory): the whole-process peak RSS (wait4's ru_maxrss, model loading included) of
`lora train` with a validation pass and of `lora eval`, on a random model folder of the shape with
a pre-quantized 4-bit base, --grad-checkpoint, 4 x 512, next to the floor `lora train
--print-config` computes (base as stored + LoRA state + the activations backward needs).

  scripts/bench_train.py                            SmolLM2-135M and Qwen2.5-0.5B, 4 x 512
  scripts/bench_train.py --quick                    seq 128, 2 layers, SmolLM2 only (a smoke run)
  scripts/bench_train.py --env LORA_CPU=avx2        both sides capped at AVX2 (see --env)
  scripts/bench_train.py --memory [--quick]         peak RSS of lora train / lora eval vs the floor
Options: --build DIR, --out FILE (default out/bench/train_throughput.json or train_memory.json),
--shapes, --compute f32,bf16, --base q4, --ckpt, --batch, --seq, --steps, --warmup, --rounds,
--threads, --layers, --profile, --no-torch, --torch-malloc tcmalloc|glibc, --env KEY=VALUE
(repeatable).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_shapes import LORA_TARGETS, SHAPES  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENMP_BLAS = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
SHARED = os.environ.get("LORA_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
# What --env LORA_CPU=avx2 adds for the libraries our kernel cap does not reach: OpenBLAS (ours and
# torch's), torch's own ATen kernels and oneDNN, so both sides run as on an AVX2-only machine.
AVX2_CAPS = {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Kernel caps a machine's environment may carry (a login default of OPENBLAS_CORETYPE=Haswell
# halves sgemm on an AVX-512 CPU): neither side inherits them, so both run the kernels the CPU
# has; --env sets them on purpose.
INHERITED_CAPS = ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
# PyTorch's CPU tuning advice is to run on TCMalloc (or jemalloc) rather than glibc's malloc, which
# gives the activations' big blocks back to the kernel and faults them in again every step (on the
# VMs measured, over half of a glibc torch step was system time). Debian: libgoogle-perftools4.
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"


def cpu_info():
    """The CPU's model name and the vector/matrix features that matter here."""
    name, flags = "", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    return {"model": name, "features": [f for f in wanted if f in flags],
            "bf16_units": "avx512_bf16" in flags or "amx_bf16" in flags}


def mapped_blas(pid):
    """BLAS shared objects a running process has mapped, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            paths = {l.split()[-1] for l in f if len(l.split()) >= 6}
    except OSError:
        return None
    return sorted(p for p in paths
                  if os.path.basename(p).startswith(("libopenblas", "libblas", "libmkl")))


def run_process(cmd, env):
    """Runs cmd; returns (exit code, stdout, stderr, peak RSS MiB of the whole process, BLAS libs
    seen in its maps). Peak RSS is wait4's ru_maxrss: everything the process did, loading too."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        blas = []
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            seen = mapped_blas(p.pid)
            if seen:
                blas = sorted(set(blas) | set(seen))
            time.sleep(0.2)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    sys.stderr.write(stderr)
    return p.returncode, stdout, stderr, usage.ru_maxrss / 1024.0, blas


def run_json(cmd, env):
    """The JSON object on the last JSON line of cmd's stdout, with the process's peak RSS and BLAS
    libraries added, or {"error", "cmd"}."""
    code, stdout, _, rss, blas = run_process(cmd, env)
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    if code != 0 or not lines:
        return {"error": f"exit {code}" if code else "no JSON output", "cmd": cmd}
    r = json.loads(lines[-1])
    r["process_peak_rss_mib"], r["mapped_blas"] = rss, blas
    return r


def torch_on_tcmalloc(args):
    return args.torch_malloc == "tcmalloc" and os.path.exists(TCMALLOC)


def environments(args):
    """(our env, torch's env, the --env pairs): the --env pairs on both, their AVX2 caps, the thread
    count, none of INHERITED_CAPS but those --env sets; torch's also the OpenMP OpenBLAS and
    TCMalloc (when installed)."""
    extra = dict(kv.split("=", 1) for kv in args.env)
    if extra.get("LORA_CPU", "").lower() == "avx2":
        extra = {**AVX2_CAPS, **extra}
    inherited = {k: v for k, v in os.environ.items() if k not in INHERITED_CAPS}
    ours = dict(inherited, OMP_NUM_THREADS=str(args.threads), **extra)
    torch = dict(ours, LD_LIBRARY_PATH=OPENMP_BLAS + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
    if torch_on_tcmalloc(args):
        torch["LD_PRELOAD"] = " ".join(filter(None, [TCMALLOC, os.environ.get("LD_PRELOAD")]))
    return ours, torch, extra


def config_commands(args, shape, compute):
    """The two commands of one configuration: ours, then torch's (None without a torch model)."""
    bench = os.path.join(args.build, "bench")
    ours = [os.path.join(bench, "train_throughput"), "--shape", shape, "--base", args.base,
            "--compute-dtype", compute, "--batch", str(args.batch), "--seq", str(args.seq),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--layers", str(args.layers)]
    if args.ckpt == "on":
        ours.append("--grad-checkpoint")
    if args.profile:
        ours.append("--profile")
    if args.no_torch or not SHAPES[shape].get("torch"):
        return ours, None
    torch = ["/usr/bin/python3", os.path.join(ROOT, "scripts", "torch_train_bench.py"),
             "--shape", shape, "--dtype", compute, "--batch", str(args.batch),
             "--seq", str(args.seq), "--threads", str(args.threads), "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--layers", str(args.layers)]
    return ours, torch


def class_split(runs):
    """Our step's time by class of work (train_throughput's "op_classes"), averaged over the runs:
    seconds per step, share of the step and the GFLOP/s each class achieved."""
    ok = [r["op_classes"] for r in runs if "op_classes" in r]
    if not ok:
        return None
    out = []
    for i, c in enumerate(ok[0]):
        row = {"class": c["class"],
               "seconds_per_step": statistics.mean(r[i]["seconds_per_step"] for r in ok),
               "share": statistics.mean(r[i]["share"] for r in ok)}
        if "gflop_per_step" in c:
            row["gflop_per_step"] = c["gflop_per_step"]
            row["gflops"] = (c["gflop_per_step"] / row["seconds_per_step"]
                             if row["seconds_per_step"] > 0 else None)
        out.append(row)
    return out


def side_summary(runs):
    """Median over every timed step of a side's runs, and its conditions (None if they differ)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"] if runs else "not run", "runs": runs}
    conds = [r["conditions"] for r in ok]
    steps = [s for r in ok for s in r["step_s"]]
    median = statistics.median(steps)
    return {"conditions": conds[0] if all(c == conds[0] for c in conds) else None,
            "timed_steps": len(steps), "median_step_s": median,
            "tokens_per_s": conds[0]["tokens_per_step"] / median,
            "peak_rss_mib": max(r["process_peak_rss_mib"] for r in ok),
            "mapped_blas": sorted({b for r in ok for b in r["mapped_blas"]}),
            "op_classes": class_split(ok), "runs": runs}


def why_no_ratio(ours, torch):
    """None when the two sides ran the same thing on the libraries they should, else why not."""
    if "error" in ours or "error" in torch:
        return "a side failed: " + (ours.get("error") or torch.get("error"))
    if ours["conditions"] is None or torch["conditions"] is None:
        return "a side's runs differ among themselves"
    diff = [f"{k} {ours['conditions'].get(k)} vs {torch['conditions'].get(k)}"
            for k in sorted(set(ours["conditions"]) | set(torch["conditions"]))
            if ours["conditions"].get(k) != torch["conditions"].get(k)]
    if diff:
        return "conditions differ (ours vs torch): " + ", ".join(diff)
    if not any("openblas-openmp" in b for b in torch["mapped_blas"]):
        return "torch did not map the OpenMP OpenBLAS: " + ", ".join(torch["mapped_blas"])
    cores = {side: {r.get("blas_core") or r.get("cpu", {}).get("blas_core")
                    for r in runs["runs"] if "error" not in r}
             for side, runs in (("ours", ours), ("torch", torch))}
    if len(cores["ours"] | cores["torch"]) != 1:
        return (f"OpenBLAS kernels differ (ours {sorted(cores['ours'])} vs torch "
                f"{sorted(cores['torch'])})")
    return None


def sgemm_peak(args, env):
    return run_json([os.path.join(args.build, "bench", "sgemm_peak"),
                     "--tokens", str(args.batch * args.seq)], env)


def speed(args, results):
    ours_env, torch_env, extra = environments(args)
    # bf16 is compared only where both sides can use bf16 units (not under an AVX2 cap).
    bf16 = results["machine"]["cpu"]["bf16_units"] and "ONEDNN_MAX_CPU_ISA" not in extra
    computes = [c for c in args.compute.split(",") if c != "bf16" or bf16]
    if len(computes) < len(args.compute.split(",")):
        print("no bf16 units on this CPU (or capped at AVX2): bf16 not run", file=sys.stderr)
    results["sgemm_peak"] = [sgemm_peak(args, ours_env)]
    for shape in args.shapes.split(","):
        for compute in computes:
            cmd_ours, cmd_torch = config_commands(args, shape, compute)
            ours_runs, torch_runs = [], []
            for _ in range(args.rounds):  # alternating, so drift hits both sides
                ours_runs.append(run_json(cmd_ours, ours_env))
                if cmd_torch:
                    torch_runs.append(run_json(cmd_torch, torch_env))
            results["configs"].append({"shape": shape, "compute": compute, "base": args.base,
                                       "grad_checkpoint": args.ckpt == "on",
                                       "ours": side_summary(ours_runs),
                                       "torch": side_summary(torch_runs) if cmd_torch else None})
    results["sgemm_peak"].append(sgemm_peak(args, ours_env))
    peak = max((p.get("peak_gflops") or 0) for p in results["sgemm_peak"]) or None
    results["sgemm_peak_gflops"] = peak
    rows = []
    for c in results["configs"]:
        o, t = c["ours"], c["torch"]
        reason = why_no_ratio(o, t) if t else "no torch model for this shape"
        c["ratio_vs_torch"] = (o["tokens_per_s"] / t["tokens_per_s"]) if reason is None else None
        c["no_ratio_because"] = reason
        ok = [r for r in o.get("runs", []) if "error" not in r]
        c["mfu_vs_sgemm_peak"] = (o["tokens_per_s"] * ok[0]["flops_per_token"] / 1e9 / peak
                                  if ok and peak else None)
        rows.append(table_row(c))
    return rows


def fmt(x, pattern):
    return pattern % x if x is not None else "-"


def table_row(c):
    o, t = c["ours"], c["torch"] or {}
    line = "  %-13s %-5s %9s %9s %7s %6s %6s %8s" % (
        c["shape"], c["compute"], fmt(o.get("tokens_per_s"), "%.1f"),
        fmt(t.get("tokens_per_s"), "%.1f"), fmt(c["ratio_vs_torch"], "%.2fx"),
        fmt(c["mfu_vs_sgemm_peak"] and 100 * c["mfu_vs_sgemm_peak"], "%.0f%%"),
        "%d/%d" % (o.get("timed_steps", 0), t.get("timed_steps", 0)),
        fmt(o.get("peak_rss_mib"), "%.0f"))
    if c["no_ratio_because"]:
        line += f"\n      no ratio: {c['no_ratio_because']}"
    for k in o.get("op_classes") or []:
        line += "\n      %-24s %7.3f s/step %5.1f%%%s" % (
            k["class"], k["seconds_per_step"], 100 * k["share"],
            " %7.1f GFLOP/s" % k["gflops"] if k.get("gflops") else "")
    return line


def make_memory_fixture(args, shape, folder):
    """A random model folder of the shape (bf16, MLX 4-bit, group 64, tied, the real tokenizer)
    and a data folder of ~1k-token records from ../shared's English corpus."""
    s = SHAPES[shape]
    model, data = os.path.join(folder, "model"), os.path.join(folder, "data")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        cmd = ["/usr/bin/python3", os.path.join(ROOT, "scripts", "make_random_model.py"), model,
               "--arch", s["arch"], "--dtype", "bf16", "--tied", "--hidden", str(s["hidden"]),
               "--layers", str(args.layers or s["layers"]), "--heads", str(s["heads"]),
               "--kv-heads", str(s["kv_heads"]), "--intermediate", str(s["inter"]),
               "--vocab", str(s["vocab"]), "--rope-theta", str(s["rope_theta"]),
               "--quantize-bits", "4", "--q-group-size", "64",
               "--tokenizer", os.path.join(SHARED, "tokenizers", s["tokenizer"], "tokenizer.json")]
        subprocess.run(cmd, check=True)
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(SHARED, "datasets", "cs336-fixtures", "corpus.en")) as f:
        lines = f.read().splitlines()
    records, cur = [], ""
    for line in lines:
        cur += line + "\n"
        if len(cur) > 4500:  # about 1k tokens
            records.append(cur)
            cur = ""
    for name, part in (("train.jsonl", records[:16]), ("valid.jsonl", records[16:24])):
        with open(os.path.join(data, name), "w") as f:
            f.writelines(json.dumps({"text": r}) + "\n" for r in part)
    return model, data


def memory(args, results):
    env, _, _ = environments(args)
    lora = os.path.join(args.build, "lora")
    rows = []
    for shape in args.shapes.split(","):
        folder = os.path.join(ROOT, "out", "bench", f"memory-{shape}-q4"
                              + (f"-{args.layers}l" if args.layers else ""))
        model, data = make_memory_fixture(args, shape, folder)
        adapter = os.path.join(folder, "adapter")
        shape_flags = ["--batch-size", str(args.batch), "--max-seq-length", str(args.seq)]
        train = [lora, "--threads", str(args.threads), "train", "--model", model, "--data", data,
                 "--adapter-path", adapter, "--grad-checkpoint", "--num-layers", "-1",
                 "--lora-keys", LORA_TARGETS, "--iters", "2", "--steps-per-eval", "2",
                 "--val-batches", "2"] + shape_flags
        _, _, err, _, _ = run_process(train + ["--print-config"], env)
        m = re.search(r"memory estimate for batches of \d+ x \d+ tokens: (\d+) MiB", err)
        floor = float(m.group(1)) if m else None
        code, _, _, train_rss, _ = run_process(train, env)
        evals = {}
        for seq in (args.seq, 2048):
            cmd = [lora, "--threads", str(args.threads), "eval", "--model", model,
                   "--adapter-path", adapter, "--data", data, "--split", "valid",
                   "--batch-size", str(args.batch), "--max-seq-length", str(seq),
                   "--test-batches", "2"]
            ecode, _, _, rss, _ = run_process(cmd, env)
            evals[str(seq)] = {"exit": ecode, "peak_rss_mib": rss}
        r = {"shape": shape, "layers": args.layers or SHAPES[shape]["layers"],
             "batch": args.batch, "seq": args.seq, "base": "q4 (pre-quantized, group 64)",
             "grad_checkpoint": True, "train_exit": code, "train_peak_rss_mib": train_rss,
             "rss_floor_mib": floor, "train_over_floor": train_rss / floor if floor else None,
             "eval": evals, "eval_below_train": evals[str(args.seq)]["peak_rss_mib"] < train_rss}
        results["memory"].append(r)
        rows.append("  %-13s train (with validation) %.0f MiB = %s the floor of %s MiB; eval at "
                    "--max-seq-length %d %.0f MiB, at 2048 %.0f MiB" % (
                        shape, train_rss, fmt(r["train_over_floor"], "%.2fx"),
                        fmt(floor, "%.0f"), args.seq, evals[str(args.seq)]["peak_rss_mib"],
                        evals["2048"]["peak_rss_mib"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b,gemma3-270m")
    ap.add_argument("--compute", default="f32,bf16", help="compute dtypes of the frozen matmuls")
    ap.add_argument("--base", default="q4", help="how our base is stored: q4, bf16 or f32")
    ap.add_argument("--ckpt", default="off", choices=("off", "on"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="processes per side and configuration")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=0,
                    help="override the layer count of every shape, both sides (quick runs)")
    ap.add_argument("--profile", action="store_true",
                    help="our runs print their per-op table too (the JSON always has the split)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set for both sides; LORA_CPU=avx2 also caps OpenBLAS "
                         "(OPENBLAS_CORETYPE=Haswell), ATen and oneDNN at AVX2")
    ap.add_argument("--torch-malloc", choices=("tcmalloc", "glibc"), default="tcmalloc",
                    help="PyTorch's allocator (default TCMalloc, as PyTorch's CPU tuning advice "
                         "has it; glibc: Debian's plain malloc)")
    ap.add_argument("--memory", action="store_true",
                    help="peak RSS of lora train (with validation) and lora eval vs the floor")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seq, args.layers, args.shapes = 128, 2, "smollm2-135m"
    if args.rounds * args.steps < 3 and not args.quick:
        ap.error("need at least 3 timed steps per side (--rounds x --steps)")
    mode = "memory" if args.memory else "throughput"
    out = args.out or os.path.join(ROOT, "out", "bench", f"train_{mode}.json")
    started = time.time()
    extra = environments(args)[2]
    results = {"machine": {"cpu": cpu_info(), "threads": args.threads,
                           "load_average_at_start": os.getloadavg()},
               "env": extra,
               "inherited_caps_dropped": {k: os.environ[k] for k in INHERITED_CAPS
                                          if k in os.environ and k not in extra},
               "torch_allocator": "tcmalloc" if torch_on_tcmalloc(args) else "glibc malloc",
               "batch": args.batch, "seq": args.seq,
               "configs": [], "memory": []}
    rows = memory(args, results) if args.memory else speed(args, results)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.time() - started
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)

    cpu = results["machine"]["cpu"]
    print(f"{cpu['model']} ({' '.join(cpu['features'])}), {args.threads} threads, batch "
          f"{args.batch} x {args.seq}, load average {results['machine']['load_average_at_start'][0]:.1f}"
          f" -> {results['machine']['load_average_at_end'][0]:.1f}"
          + (f", env {' '.join(args.env)}" if args.env else ""))
    if not args.memory:
        print(f"sgemm peak {fmt(results['sgemm_peak_gflops'], '%.1f')} GFLOP/s (before "
              f"{fmt(results['sgemm_peak'][0].get('peak_gflops'), '%.1f')}, after "
              f"{fmt(results['sgemm_peak'][1].get('peak_gflops'), '%.1f')}); medians of timed "
              f"steps, torch is eager f32 or bf16 autocast with the OpenMP OpenBLAS on "
              f"{results['torch_allocator']}; OpenBLAS kernels "
              f"{results['sgemm_peak'][0].get('cpu', {}).get('blas_core', '-')}"
              + "".join(f"; {k}={v} from the environment not passed on"
                        for k, v in results["inherited_caps_dropped"].items()))
        print("  %-13s %-5s %9s %9s %7s %6s %6s %8s" % (
            "shape", "comp", "tokens/s", "torch", "ratio", "MFU", "steps", "RSS MiB"))
    print("\n".join(rows))
    print(f"written {out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
