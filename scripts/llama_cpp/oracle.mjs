// llama.cpp (node-llama-cpp's prebuilt CPU binaries) as the reference for loracpp's GGUF tests.
//   node oracle.mjs --model M.gguf [--lora A.gguf] (--tokens 1,2,3 | --prompt TEXT) --greedy N
//     -> {"tokens": [...generated], "text": "...", "tokens_per_second": ...}
//   node oracle.mjs --model M.gguf [--lora A.gguf] --tokens 1,2,3 --logprobs
//     -> {"logprobs": [[log p(v) for v in vocab] after each input token]}
//   node oracle.mjs --jobs   reads a JSON list of such jobs ({"model", "lora", "tokens", "prompt",
//     "greedy", "logprobs"}) on stdin and answers a JSON list: one start-up for many runs.
// The KV cache is F32 (the default F16 cache alone moves log-probs by 1e-2) and flash attention
// off (on, its CPU kernel moves them by 1e-2 as well).
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";

function parseArgs(argv) {
  const job = {greedy: 0, logprobs: false, threads: 1};
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === "--model") job.model = argv[++i];
    else if (a === "--lora") job.lora = argv[++i];
    else if (a === "--tokens") job.tokens = argv[++i].split(",").map(Number);
    else if (a === "--prompt") job.prompt = argv[++i];
    else if (a === "--greedy") job.greedy = Number(argv[++i]);
    else if (a === "--logprobs") job.logprobs = true;
    else if (a === "--threads") job.threads = Number(argv[++i]);
    else if (a === "--jobs") job.jobs = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return job;
}

async function run(llama, job) {
  const model = await llama.loadModel({modelPath: job.model});
  const context = await model.createContext({
    contextSize: 512,
    threads: job.threads ?? 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    ...(job.lora ? {lora: {adapters: [{filePath: job.lora, scale: 1}]}} : {}),
  });
  const sequence = context.getSequence();
  const input = job.tokens ?? model.tokenize(job.prompt ?? "", false);
  const out = {input, kv_cache: [context.kvCacheKeyType, context.kvCacheValueType]};
  if (job.logprobs) {
    const sampling = {temperature: 1, topK: 0, topP: 1, minP: 0};
    const items = input.map((t) => [t, {generateNext: {probabilities: true, options: sampling}}]);
    const results = await sequence.controlledEvaluate(items);
    out.logprobs = results.map((r) => {
      const row = [];
      for (const [token, p] of r.next.probabilities) row[token] = Math.log(p);
      return Array.from(row, (v) => (v === undefined ? null : v));
    });
  } else {
    const tokens = [];
    const start = process.hrtime.bigint();
    for await (const t of sequence.evaluate(input, {temperature: 0, yieldEogToken: true})) {
      tokens.push(t);
      if (tokens.length >= job.greedy) break;
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    out.tokens = tokens;
    out.text = model.detokenize(tokens, false, input);
    out.tokens_per_second = tokens.length / seconds;
  }
  await context.dispose();
  await model.dispose();
  return out;
}

const args = parseArgs(process.argv.slice(2));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
if (args.jobs) {
  const jobs = JSON.parse(readFileSync(0, "utf8"));
  const answers = [];
  for (const job of jobs) answers.push(await run(llama, job));
  process.stdout.write(JSON.stringify(answers) + "\n");
} else {
  if (!args.model) throw new Error("--model is required");
  process.stdout.write(JSON.stringify(await run(llama, args)) + "\n");
}
await llama.dispose();
