#!/usr/bin/env python3
"""Step time of data-parallel LoRA training on N machines, modelled from a measured run.

Reads the JSON of `build/bench/data_parallel` on one process (CPU seconds per step, tokens per
step) and the gradient bytes, and prints, for N = 2..64 machines on 10 and 25 Gbit/s Ethernet:
  compute  = tokens per machine per step * CPU seconds per token / cores per machine
  exchange = ring all-reduce: 2 (N-1)/N * gradient bytes / bandwidth + 2 (N-1) * latency
  step     = compute + exchange (no overlap: the exchange starts after the last backward)
for a fixed batch per machine (the global batch grows with N) and for a fixed global batch
(split N ways). Usage: scripts/dp_step_model.py one.json [--cores 16] [--tokens-per-machine 2048]
  [--global-tokens 131072] [--latency-us 50] [--gradient-bytes B]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("one_process_json")
    ap.add_argument("--cores", type=int, default=16, help="cores per machine")
    ap.add_argument("--tokens-per-machine", type=int, default=4 * 512)
    ap.add_argument("--global-tokens", type=int, default=64 * 4 * 512)
    ap.add_argument("--latency-us", type=float, default=50.0, help="per message, kernel TCP")
    ap.add_argument("--gradient-bytes", type=int, help="default: the run's (its shape, r=8)")
    a = ap.parse_args()
    m = json.load(open(a.one_process_json))
    tokens = m["micro_batches"] * m["batch"] * m["seq"]
    cpu_per_token = m["rank0_cpu_s_per_step"] / tokens * m["threads_per_rank"]
    grad = a.gradient_bytes or m["gradient_bytes"]
    print(f"measured: {m['shape']}, {cpu_per_token * 1e3:.2f} CPU-ms per token, "
          f"{grad / 1e6:.2f} MB of LoRA gradients per step; {a.cores} cores per machine, "
          f"latency {a.latency_us:.0f} us")
    print("| machines | link | exchange ms | step s, batch per machine | efficiency "
          "| step s, fixed global batch | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for gbit in (10, 25):
        bw = gbit * 1e9 / 8
        for n in (2, 4, 8, 16, 32, 64):
            exchange = 2 * (n - 1) / n * grad / bw + 2 * (n - 1) * a.latency_us * 1e-6
            weak = a.tokens_per_machine * cpu_per_token / a.cores
            strong = a.global_tokens / n * cpu_per_token / a.cores
            print(f"| {n} | {gbit} Gbit/s | {exchange * 1e3:.1f} | {weak + exchange:.2f} | "
                  f"{weak / (weak + exchange):.1%} | {strong + exchange:.2f} | "
                  f"{strong / (strong + exchange):.1%} |")


if __name__ == "__main__":
    main()
