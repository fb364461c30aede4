#!/usr/bin/env node
// `lora serve` under load: N streaming clients on loopback for a bounded time, each sending
// completions back to back (prompts of different lengths). Reports requests/s, time to first token
// (p50/p99), tokens/s per request (p50 and the slowest 1%), total tokens/s, and the server's RSS
// sampled every second over the run, for three servers: one request at a time (--parallel 1), N at
// once with their decode steps interleaved (--max-batch 1), and N at once with their decode steps
// batched (--max-batch N). Memory should stay flat once the first answers have run: the growth
// over the second half of each run (last sample minus the one at half time, and the least-squares
// slope over that half) is reported, with the whole series in the JSON.
//   node bench/serve_bench.mjs [--clients 8] [--seconds 180] [--max-tokens 128] [--model DIR]
//                              [--quantize 0] [--threads 1] [--bin build/lora]
//                              [--out out/bench/serve_bench.json]
// The defaults are the figures to quote; the command with every option is printed and kept.
// --threads N is lora's own (0: its default); one by default, as the clients need a core too.
// The default model, stories260K, answers thousands of requests in a run: what memory does over
// many requests shows. A model where the base's weights dominate a step, so that batching
// matters more, is SmolLM2-135M's shape with random weights (--quantize 4):
//   /usr/bin/python3 scripts/make_random_model.py out/bench-smollm2-135m-random --arch llama \
//     --hidden 576 --layers 30 --heads 9 --kv-heads 3 --intermediate 1536 --vocab 49152 --tied \
//     --rope-theta 100000 --dtype bf16 --tokenizer ../shared/tokenizers/smollm2-135m/tokenizer.json
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { startServer } from "../tests/clients/lora_server.mjs";

const opts = { clients: 8, seconds: 180, "max-tokens": 128, model: "../shared/models/stories260K",
               quantize: 0, threads: 1, bin: "build/lora", out: "out/bench/serve_bench.json" };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  if (!(key in opts)) { console.error("unknown option " + process.argv[i]); process.exit(2); }
  opts[key] = typeof opts[key] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}

const rssMiB = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
};
// Least-squares slope of ys over xs.
const slope = (xs, ys) => {
  const n = xs.length, mx = xs.reduce((a, x) => a + x, 0) / n, my = ys.reduce((a, y) => a + y, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) { num += (xs[i] - mx) * (ys[i] - my); den += (xs[i] - mx) ** 2; }
  return den ? num / den : NaN;
};
const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const prompts = ["Once upon a time", "The little dog ran to the park and saw",
  "Tom and his sister Lily wanted to build a big castle out of sand by the sea, so they",
  "One day"];

// One streamed completion: time to the first text, tokens, and its rate.
async function oneRequest(url, seed) {
  try {
    return await streamOne(url, seed);
  } catch (e) {
    return { status: 0, error: String(e.cause ?? e) };  // counted as refused
  }
}

async function streamOne(url, seed) {
  const t0 = performance.now();
  const res = await fetch(url + "/v1/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "base", prompt: prompts[seed % prompts.length],
                           max_tokens: opts["max-tokens"],
                           temperature: 0.8, seed, stream: true,
                           stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) return { status: res.status };
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", first = null, tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: {")) continue;
      const data = JSON.parse(event.slice(6));
      if (data.usage) tokens = data.usage.completion_tokens;
      if (first === null && data.choices.length && data.choices[0].text) first = performance.now();
    }
  }
  const t1 = performance.now();
  // Tokens arrive several to an event when they come faster than the network thread wakes, so
  // the rate is over the whole request (queueing and prefill included), not after the first.
  return { status: 200, ttft: (first ?? t1) - t0, tokens, tps: tokens / ((t1 - t0) / 1000) };
}

async function run(parallel, maxBatch) {
  const server = await startServer(opts.bin, ["--model", opts.model, "--model-name", "base",
    "--quantize", String(opts.quantize), "--parallel", String(parallel),
    "--max-batch", String(maxBatch), "--queue-size", String(opts.clients),
    "--max-tokens-limit", String(opts["max-tokens"])],
    { timeoutMs: 300000, globalArgs: opts.threads ? ["--threads", String(opts.threads)] : [] });
  const pid = server.child.pid;
  const results = [];
  const t0 = performance.now();
  const deadline = t0 + opts.seconds * 1000;
  // [seconds since the start, RSS MiB], while clients send (the answers still running at the
  // deadline are waited for without sampling: the load is over).
  const rss = [[0, rssMiB(pid)]];
  const sampler = setInterval(() => {
    if (performance.now() < deadline) rss.push([(performance.now() - t0) / 1000, rssMiB(pid)]);
  }, 1000);
  await Promise.all(Array.from({ length: opts.clients }, async (_, c) => {
    for (let i = 0; performance.now() < deadline; i++) results.push(await oneRequest(server.url, c * 100000 + i));
  }));
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  const rssEnd = rssMiB(pid);
  await server.stop();
  const half = rss.filter(([t]) => t >= opts.seconds / 2);
  const ok = results.filter((r) => r.status === 200);
  const tokens = ok.reduce((a, r) => a + r.tokens, 0);
  return {
    parallel, max_batch: maxBatch, clients: opts.clients, seconds: elapsed, requests: ok.length,
    refused: results.length - ok.length,
    requests_per_s: ok.length / elapsed, tokens_per_s: tokens / elapsed,
    ttft_ms_p50: pct(ok.map((r) => r.ttft), 50), ttft_ms_p99: pct(ok.map((r) => r.ttft), 99),
    request_tps_p50: pct(ok.map((r) => r.tps), 50), request_tps_p1: pct(ok.map((r) => r.tps), 1),
    rss_mib_start: rss[0][1], rss_mib_half: half.length ? half[0][1] : NaN,
    rss_mib_peak: Math.max(...rss.map(([, m]) => m)), rss_mib_last: rss[rss.length - 1][1],
    rss_mib_after_drain: rssEnd,
    rss_growth_second_half_mib: half.length ? half[half.length - 1][1] - half[0][1] : NaN,
    rss_slope_second_half_mib_per_min: half.length > 1 ? 60 * slope(half.map(([t]) => t), half.map(([, m]) => m)) : NaN,
    rss_series_s_mib: rss.map(([t, m]) => [Number(t.toFixed(1)), Number(m.toFixed(2))]),
  };
}

const command = "node bench/serve_bench.mjs " +
  Object.entries(opts).filter(([k]) => k !== "out").map(([k, v]) => `--${k} ${v}`).join(" ");
console.log(command);
const load = { loadavg_start: loadavg() };
// The vector features that decide the kernels' speed, as /proc/cpuinfo lists them.
const cpuFlags = (/^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "").trim().split(/\s+/)
  .filter((f) => /^(avx2|fma|f16c|avx512f|avx512bw|avx512_bf16|amx_tile|amx_bf16)$/.test(f));

const runs = [await run(1, 1), await run(opts.clients, 1), await run(opts.clients, opts.clients)];
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
load.loadavg_end = loadavg();
console.log("| parallel | max batch | clients | requests | req/s | tokens/s | TTFT p50 / p99 ms | tok/s per request p50 / p1 | RSS MiB start / half / peak / last | RSS growth, 2nd half: MiB, MiB/min |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of runs)
  console.log(`| ${r.parallel} | ${r.max_batch} | ${r.clients} | ${r.requests} | ${f(r.requests_per_s, 2)} | ${f(r.tokens_per_s, 0)} | ` +
              `${f(r.ttft_ms_p50)} / ${f(r.ttft_ms_p99)} | ${f(r.request_tps_p50)} / ${f(r.request_tps_p1)} | ` +
              `${f(r.rss_mib_start)} / ${f(r.rss_mib_half)} / ${f(r.rss_mib_peak)} / ${f(r.rss_mib_last)} | ` +
              `${f(r.rss_growth_second_half_mib, 2)}, ${f(r.rss_slope_second_half_mib_per_min, 2)} |`);
console.log(`load average ${load.loadavg_start.map((x) => x.toFixed(1)).join(" ")} at the start, ` +
            `${load.loadavg_end.map((x) => x.toFixed(1)).join(" ")} at the end; ${cpus().length} CPUs (${cpus()[0]?.model}: ` +
            `${cpuFlags.join(" ")})`);
mkdirSync(dirname(opts.out), { recursive: true });
writeFileSync(opts.out, JSON.stringify({ command, options: opts, cpu: cpus()[0]?.model, cpus: cpus().length,
                                         cpu_flags: cpuFlags, ...load, runs }, null, 2) + "\n");
console.log("written " + opts.out);
