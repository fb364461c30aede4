#!/usr/bin/python3
"""Generation speed at batch 1: `lora generate` on an MLX 4-bit model and on GGUF files of the same
float weights (by default a Q4_0 and a Q4_K_M one), llama.cpp (node-llama-cpp 3.21.1,
scripts/llama_cpp) on each GGUF file, and the machine's memory bandwidth (bench/stream_triad: its
triad, and a pass that only reads), all in one run with the same threads, the programs alternating
run by run so that a change in the machine's load hits each of them.

    bench/generate_bench.py [--shape qwen2.5-0.5b|smollm2-135m|tinyllama-1.1b] [--threads 1,2]
        [--runs 3] [--tokens 64] [--prompt-tokens N] [--kv-cache-type f32|f16]
        [--activations int8|f32|f32,int8] [--gguf-types q4_0,q4_k_m] [--no-mlx]
        [--work out/bench/generate] [--json FILE]

The model is random (scripts/make_random_model.py, bf16, tied embeddings) with the shape's
dimensions and vocabulary, so decode reads as many bytes per token as the real model; its
tokenizer is stories260K's (LORA_SHARED, default ../shared), whose ids the random vocabulary
pads. The prompt is a short story's opening (about 50 tokens), or with --prompt-tokens that text
repeated to about N tokens: decode then reads a long KV cache at every step. lora's KV cache is
f32 unless --kv-cache-type f16 (llama.cpp's is F16, its default, either way). MLX: `lora convert --quantize 4 --q-group-size 64` (bf16 scales and biases on disk: 4.5 bits
a weight, as Q4_0). GGUF: bench/gguf_from_folder with Q4_0 (llama.cpp's rounding), and `lora convert
--q-type q4_k_m` (llama-quantize's Q4_K_M mix); any other --gguf-types entry T by `lora convert
--q-type T` (q3_k, q2_k, ...: the K types need rows that are whole 256-element blocks, which
tinyllama-1.1b's 2048 and 5632 are and the other shapes' 896 and 576 are not; their other
matrices fall back as `lora convert` says). Every run starts from the same prompt ids. lora runs
the MLX model and every GGUF file with each `--decode-activations` value of --activations: int8
(lora's default; programs lora_mlx_q4_int8, lora_gguf_T_int8) and, when asked, f32 (lora_mlx_q4,
lora_gguf_T). --int8-activations, from before int8 was the default, runs both.

Reported per program and thread count: medians of prompt (prefill) tokens/s and decode tokens/s,
the bytes one decode step reads (every matrix as held in memory, the head included, plus the KV
cache at the run's mean context), and decode tokens/s x bytes/token over the triad's GB/s and over
the read-only pass's (a decode step reads its weights and writes next to nothing: its ceiling).
Needs build/lora, build/bench/gguf_from_folder and build/bench/stream_triad (Release), node.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64,
                         intermediate=4864, vocab=151936),
    "smollm2-135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, head_dim=64,
                         intermediate=1536, vocab=49152),
    "tinyllama-1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, head_dim=64,
                           intermediate=5632, vocab=32000),
}
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
          "park with her friends. One day, she saw a big red ball under a tree and ran to get it.")


# A run that takes longer than this is recorded as timed out (on a machine loaded by other jobs,
# a multi-threaded run waits for a time slice at every barrier).
RUN_TIMEOUT_S = 600


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=RUN_TIMEOUT_S)
    return out.stdout


def run_json(cmd, env=None):
    return json.loads(run(cmd, env).strip().splitlines()[-1])


def shared_dir():
    return os.environ.get("LORA_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))


def make_models(shape, work, gguf_types):
    """The MLX 4-bit folder and one GGUF file per type, of the same random bf16 weights."""
    s = SHAPES[shape]
    base = os.path.join(work, shape)
    bf16, mlx = base + "-bf16", base + "-q4"
    stories = os.path.join(shared_dir(), "models", "stories260K")
    if not os.path.exists(os.path.join(bf16, "model.safetensors")):
        run(["/usr/bin/python3", "scripts/make_random_model.py", bf16, "--arch", "llama",
             "--dtype", "bf16", "--tied", "--hidden", str(s["hidden"]), "--layers",
             str(s["layers"]), "--heads", str(s["heads"]), "--kv-heads", str(s["kv_heads"]),
             "--head-dim", str(s["head_dim"]), "--intermediate", str(s["intermediate"]),
             "--vocab", str(s["vocab"]), "--tokenizer", os.path.join(stories, "tokenizer.json")])
    if not os.path.exists(os.path.join(mlx, "model.safetensors")):
        run(["build/lora", "convert", "--model", bf16, "--quantize", "4", "--q-group-size", "64",
             "--out", mlx])
    ggufs = {}
    for t in gguf_types:
        ggufs[t] = f"{base}-{t}.gguf"
        if os.path.exists(ggufs[t]):
            continue
        if t == "q4_0":  # llama.cpp's own rounding
            run(["build/bench/gguf_from_folder", bf16, ggufs[t], "q4_0",
                 os.path.join(shared_dir(), "models", "stories260K-gguf", "stories260K-f32.gguf")])
        else:
            run(["build/lora", "convert", "--model", bf16, "--out", ggufs[t], "--q-type", t])
    return mlx, ggufs


def prompt_ids(model, text):
    """The ids `lora generate` feeds for `text` (special tokens included), for llama.cpp."""
    tok = subprocess.run(["build/lora", "--json", "tokenize", "--model", model], input=json.dumps(
        {"text": text}) + "\n", capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(tok.stdout.strip().splitlines()[-1])["ids_with_special"]


def matrix_bytes(model):
    """Bytes of every matrix one decode step reads: all projections and the head (the embedding
    table when tied: the head reads it whole, the lookup one row)."""
    info = run_json(["build/lora", "--json", "inspect", model])
    cfg = info["config"]
    tensors = {t["name"]: t for t in info["tensors"]}
    total = 0
    for name, t in tensors.items():
        if len(t["shape"]) != 2 or name.endswith((".scales", ".biases")):
            continue
        embed = "embed_tokens" in name or name == "token_embd.weight"
        if embed and not cfg["tie_word_embeddings"]:
            continue
        total += t["bytes"]
        prefix = name[: -len(".weight")]
        if prefix + ".scales" in tensors:  # MLX: loracpp holds scales and biases as f32
            groups = tensors[prefix + ".scales"]["shape"]
            total += 2 * groups[0] * groups[1] * 4
    return total, cfg


def kv_bytes(cfg, context, element_bytes):
    return 2 * cfg["num_layers"] * cfg["num_kv_heads"] * cfg["head_dim"] * element_bytes * context


def ours(model, ids_text, tokens, threads, kv_cache="f32", activations="f32"):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r = run_json(["build/lora", "--threads", str(threads), "--json", "generate", "--model", model,
                  "--prompt", ids_text, "--max-tokens", str(tokens), "--temp", "0",
                  "--kv-cache-type", kv_cache, "--decode-activations", activations], env)
    return {"prompt_tokens": r["prompt_tokens"], "generated_tokens": r["generated_tokens"],
            "prompt_tokens_per_s": r["prompt_tokens_per_s"], "tokens_per_s": r["tokens_per_s"],
            "tokens": r["tokens"]}


def llama_cpp(model, ids, tokens, threads):
    return run_json(["node", "bench/llama_cpp_generate.mjs", "--model", model, "--tokens",
                     ",".join(map(str, ids)), "--generate", str(tokens), "--threads", str(threads)])


def triad(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return run_json(["build/bench/stream_triad", "--reps", "5"], env)


def cpu_description():
    model, flags = "", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
    return {"model": model, "cores": os.cpu_count(), "features": [f for f in wanted if f in flags]}


def summarize(runs, key):
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "runs": values}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=0,
                    help="repeat the prompt text to about this many tokens (default: once)")
    ap.add_argument("--kv-cache-type", choices=["f32", "f16"], default="f32",
                    help="lora's KV cache (llama.cpp keeps its default F16)")
    ap.add_argument("--activations", default="int8",
                    help="lora's --decode-activations values to run, comma-separated (default int8, "
                         "lora's default; f32,int8 runs both)")
    ap.add_argument("--int8-activations", action="store_true",
                    help="the same as --activations f32,int8")
    ap.add_argument("--gguf-types", default="q4_0,q4_k_m",
                    help="the GGUF files to make and run, by `lora convert --q-type` name")
    ap.add_argument("--no-mlx", action="store_true", help="leave out the MLX 4-bit model")
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "bench", "generate"))
    ap.add_argument("--json", help="also write the result here (after each thread count)")
    ap.add_argument("--run-timeout", type=int, default=RUN_TIMEOUT_S,
                    help="seconds before one program's run counts as timed out")
    a = ap.parse_args()
    activations = ["f32", "int8"] if a.int8_activations else a.activations.split(",")
    unknown = set(activations) - {"f32", "int8"}
    if unknown:
        ap.error(f"--activations: {', '.join(sorted(unknown))} is not f32 or int8")
    globals()["RUN_TIMEOUT_S"] = a.run_timeout
    os.makedirs(a.work, exist_ok=True)
    mlx, ggufs = make_models(a.shape, a.work, [t for t in a.gguf_types.split(",") if t])
    prompt = PROMPT
    ids = prompt_ids(mlx, prompt)
    if a.prompt_tokens > len(ids):
        prompt = " ".join([PROMPT] * round(a.prompt_tokens / len(ids)))
        ids = prompt_ids(mlx, prompt)
    kv = a.kv_cache_type
    # Each program: (what it runs, the file it reads, the llama.cpp program it is compared with).
    programs, files, reference = {}, {}, {}
    for act in activations if not a.no_mlx else []:
        name = "lora_mlx_q4" + ("_int8" if act == "int8" else "")
        programs[name] = lambda t, act=act: ours(mlx, prompt, a.tokens, t, kv, act)
        files[name] = mlx
        if "q4_0" in ggufs:  # the same float weights at the same 4.5 bits a weight on disk
            reference[name] = "llama_cpp_gguf_q4_0"
    for typ, path in ggufs.items():
        programs[f"llama_cpp_gguf_{typ}"] = lambda t, path=path: llama_cpp(path, ids, a.tokens, t)
        files[f"llama_cpp_gguf_{typ}"] = path
        for act in activations:
            name = f"lora_gguf_{typ}" + ("_int8" if act == "int8" else "")
            programs[name] = lambda t, path=path, act=act: ours(path, prompt, a.tokens, t, kv, act)
            files[name] = path
            reference[name] = f"llama_cpp_gguf_{typ}"
    load_before = os.getloadavg()
    results = {}
    for threads in [int(t) for t in a.threads.split(",")]:
        runs = {name: [] for name in programs}
        runs["triad"] = []
        for i in range(a.runs):
            order = list(programs)
            order = order[i % len(order):] + order[: i % len(order)]
            runs["triad"].append(triad(threads))
            for name in order:
                try:
                    runs[name].append(programs[name](threads))
                except subprocess.TimeoutExpired:
                    runs[name].append({"timed_out": RUN_TIMEOUT_S, "tokens_per_s": 0.0,
                                       "prompt_tokens_per_s": 0.0, "generated_tokens": 0,
                                       "tokens": []})
                print(f"threads {threads} run {i}: {name} decode "
                      f"{runs[name][-1]['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
        results[threads] = runs
        write_report(a, files, reference, ids, programs, results, load_before)


def write_report(a, files, reference, ids, programs, results, load_before):
    """files: each program's model; reference: each of ours against llama.cpp on the same file
    (the MLX model against the Q4_0 file)."""
    load_after = os.getloadavg()
    matrices = {path: matrix_bytes(path) for path in set(files.values())}
    cfg = next(iter(matrices.values()))[1]
    prompt_len = len(ids)
    context = prompt_len + (a.tokens + 1) / 2
    ours_kv = 2 if a.kv_cache_type == "f16" else 4
    # llama.cpp's KV cache is F16 (2 bytes an element).
    bytes_per_token = {name: matrices[path][0] + kv_bytes(
        cfg, context, 2 if name.startswith("llama_cpp") else ours_kv)
        for name, path in files.items()}
    report = {"bench": "generate", "shape": a.shape, "config": cfg, "prompt_tokens": prompt_len,
              "lora_kv_cache_type": a.kv_cache_type,
              "generated_tokens": a.tokens, "runs": a.runs, "cpu": cpu_description(),
              "load_average_before": load_before, "load_average_after": load_after,
              "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "bytes_per_token": bytes_per_token, "threads": {}}
    for threads, runs in results.items():
        bw = statistics.median(r["median_gbps"] for r in runs["triad"])
        read_bw = statistics.median(r["read_median_gbps"] for r in runs["triad"])
        entry = {"triad_gbps": summarize(runs["triad"], "median_gbps"),
                 "read_gbps": summarize(runs["triad"], "read_median_gbps")}
        for name in programs:
            decode = summarize(runs[name], "tokens_per_s")
            entry[name] = {"decode_tokens_per_s": decode,
                           "prompt_tokens_per_s": summarize(runs[name], "prompt_tokens_per_s"),
                           "generated": [r["generated_tokens"] for r in runs[name]],
                           "bandwidth_share": decode["median"] * bytes_per_token[name] / 1e9 / bw,
                           "read_bandwidth_share":
                               decode["median"] * bytes_per_token[name] / 1e9 / read_bw}
        for name, ref_name in reference.items():
            for key, out in (("decode_tokens_per_s", "decode_vs_llama_cpp"),
                             ("prompt_tokens_per_s", "prompt_vs_llama_cpp")):
                ref = entry[ref_name][key]["median"]
                if ref > 0:
                    entry[name][out] = entry[name][key]["median"] / ref
        # Earlier reports named the f32 comparisons of the two default files this way.
        legacy = {"lora_gguf_q4_0": "same_greedy_tokens_gguf",
                  "lora_gguf_q4_k_m": "same_greedy_tokens_q4_k_m"}
        for name, ref_name in reference.items():
            if name.startswith("lora_gguf"):
                entry[legacy.get(name, f"same_greedy_tokens_{name}")] = (
                    runs[name][0]["tokens"] == runs[ref_name][0]["tokens"])
        report["threads"][str(threads)] = entry
    print_table(report)
    text = json.dumps(report, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)


def print_table(report):
    print(f"{report['shape']} shape, random weights, prompt {report['prompt_tokens']} tokens, "
          f"{report['generated_tokens']} generated, medians of {report['runs']} runs; load average "
          f"{report['load_average_before'][0]:.1f} -> {report['load_average_after'][0]:.1f}",
          file=sys.stderr)
    for threads, e in report["threads"].items():
        print(f"threads {threads}: triad {e['triad_gbps']['median']:.2f} GB/s, read only "
              f"{e['read_gbps']['median']:.2f} GB/s", file=sys.stderr)
        for name in report["bytes_per_token"]:
            r = e[name]
            vs = r.get("decode_vs_llama_cpp")
            print(f"  {name:24s} prompt {r['prompt_tokens_per_s']['median']:8.1f} tok/s  decode "
                  f"{r['decode_tokens_per_s']['median']:7.2f} tok/s  "
                  f"{report['bytes_per_token'][name] / 1e6:7.1f} MB/token  "
                  f"{100 * r['bandwidth_share']:5.1f}% of triad "
                  f"{100 * r['read_bandwidth_share']:5.1f}% of read"
                  + (f"  {vs:.2f}x llama.cpp" if vs else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
