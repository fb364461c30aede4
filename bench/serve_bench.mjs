#!/usr/bin/env node
// `lora serve` under load: N streaming clients on loopback for a bounded time, each sending
// completions back to back (prompts of different lengths). Reports requests/s, time to first token
// (p50/p99), tokens/s per request (p50 and the slowest 1%), total tokens/s, and the server's RSS
// over the run (start, after the first second, peak, end; sampled every 200 ms), for three
// servers: one request at a time (--parallel 1), N at once with their decode steps interleaved
// (--max-batch 1), and N at once with their decode steps batched (--max-batch N).
//   node bench/serve_bench.mjs [--clients 8] [--seconds 10] [--max-tokens 128] [--model DIR]
//                              [--quantize 0] [--threads 0] [--bin build/lora]
//                              [--out out/bench/serve_bench.json]
// --threads N is lora's own (0: its default). A model where batching matters (the base's weights
// are widened from 4 bits every step, whatever the batch) is SmolLM2-135M's shape with random
// weights:
//   /usr/bin/python3 scripts/make_random_model.py out/bench-smollm2-135m-random --arch llama \
//     --hidden 576 --layers 30 --heads 9 --kv-heads 3 --intermediate 1536 --vocab 49152 --tied \
//     --rope-theta 100000 --dtype bf16 --tokenizer ../shared/tokenizers/smollm2-135m/tokenizer.json
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { startServer } from "../tests/clients/lora_server.mjs";

const opts = { clients: 8, seconds: 10, "max-tokens": 128, model: "../shared/models/stories260K",
               quantize: 0, threads: 0, bin: "build/lora", out: "out/bench/serve_bench.json" };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  if (!(key in opts)) { console.error("unknown option " + process.argv[i]); process.exit(2); }
  opts[key] = typeof opts[key] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}

const rssMiB = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
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
  const rss = [rssMiB(pid)];
  const sampler = setInterval(() => rss.push(rssMiB(pid)), 200);
  const results = [];
  const t0 = performance.now();
  const deadline = t0 + opts.seconds * 1000;
  await Promise.all(Array.from({ length: opts.clients }, async (_, c) => {
    for (let i = 0; performance.now() < deadline; i++) results.push(await oneRequest(server.url, c * 100000 + i));
  }));
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  rss.push(rssMiB(pid));
  await server.stop();
  const ok = results.filter((r) => r.status === 200);
  const tokens = ok.reduce((a, r) => a + r.tokens, 0);
  return {
    parallel, max_batch: maxBatch, clients: opts.clients, seconds: elapsed, requests: ok.length,
    refused: results.length - ok.length,
    requests_per_s: ok.length / elapsed, tokens_per_s: tokens / elapsed,
    ttft_ms_p50: pct(ok.map((r) => r.ttft), 50), ttft_ms_p99: pct(ok.map((r) => r.ttft), 99),
    request_tps_p50: pct(ok.map((r) => r.tps), 50), request_tps_p1: pct(ok.map((r) => r.tps), 1),
    rss_mib_start: rss[0], rss_mib_after_1s: rss[Math.min(5, rss.length - 1)],
    rss_mib_peak: Math.max(...rss), rss_mib_end: rss[rss.length - 1],
  };
}

const runs = [await run(1, 1), await run(opts.clients, 1), await run(opts.clients, opts.clients)];
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
console.log("| parallel | max batch | clients | req/s | tokens/s | TTFT p50 / p99 ms | tok/s per request p50 / p1 | RSS MiB start / 1 s / peak / end |");
console.log("|---|---|---|---|---|---|---|---|");
for (const r of runs)
  console.log(`| ${r.parallel} | ${r.max_batch} | ${r.clients} | ${f(r.requests_per_s, 2)} | ${f(r.tokens_per_s, 0)} | ` +
              `${f(r.ttft_ms_p50)} / ${f(r.ttft_ms_p99)} | ${f(r.request_tps_p50)} / ${f(r.request_tps_p1)} | ` +
              `${f(r.rss_mib_start)} / ${f(r.rss_mib_after_1s)} / ${f(r.rss_mib_peak)} / ${f(r.rss_mib_end)} |`);
mkdirSync(dirname(opts.out), { recursive: true });
writeFileSync(opts.out, JSON.stringify({ options: opts, runs }, null, 2) + "\n");
console.log("written " + opts.out);
