// llama.cpp (node-llama-cpp's prebuilt CPU binaries) as the reference for loracpp's GGUF tests.
//   node oracle.mjs --model M.gguf [--lora A.gguf] --tokens 1,2,3 --greedy N
//     -> {"tokens": [...generated], "text": "..."}
//   node oracle.mjs --model M.gguf [--lora A.gguf] --tokens 1,2,3 --logprobs
//     -> {"logprobs": [[log p(v) for v in vocab] after each input token]}
// The KV cache is F32 (the default F16 cache alone moves log-probs by 1e-2) and flash attention
// off (on, its CPU kernel moves them by 1e-2 as well).
import {getLlama} from "node-llama-cpp";

function parseArgs(argv) {
  const args = {greedy: 0, logprobs: false, threads: 1};
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === "--model") args.model = argv[++i];
    else if (a === "--lora") args.lora = argv[++i];
    else if (a === "--tokens") args.tokens = argv[++i].split(",").map(Number);
    else if (a === "--prompt") args.prompt = argv[++i];
    else if (a === "--greedy") args.greedy = Number(argv[++i]);
    else if (a === "--logprobs") args.logprobs = true;
    else if (a === "--threads") args.threads = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.model) throw new Error("--model is required");
  return args;
}

const args = parseArgs(process.argv.slice(2));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: args.model});
const context = await model.createContext({
  contextSize: 512,
  threads: args.threads,
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
  ...(args.lora ? {lora: {adapters: [{filePath: args.lora, scale: 1}]}} : {}),
});
const sequence = context.getSequence();
const input = args.tokens ?? model.tokenize(args.prompt ?? "", false);
const out = {input, kv_cache: [context.kvCacheKeyType, context.kvCacheValueType]};
if (args.logprobs) {
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
    if (tokens.length >= args.greedy) break;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  out.tokens = tokens;
  out.text = model.detokenize(tokens, false, input);
  out.tokens_per_second = tokens.length / seconds;
}
process.stdout.write(JSON.stringify(out) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
