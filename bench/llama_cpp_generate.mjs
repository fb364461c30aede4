// llama.cpp's generation speed (node-llama-cpp 3.21.1's prebuilt CPU binaries, installed by
// scripts/setup.sh under scripts/llama_cpp) on a GGUF file: greedy, from given token ids.
//   node bench/llama_cpp_generate.mjs --model M.gguf --tokens 1,2,3 --generate N --threads T
//     -> {"prompt_tokens", "generated_tokens", "prompt_tokens_per_s", "tokens_per_s", ...}
// The prompt's speed is its tokens over the time to the first generated token (the prefill and
// one sampling); the decode speed is the tokens after the first over the time they took. The
// context takes llama.cpp's defaults (F16 KV cache), as a user running it gets.
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../scripts/llama_cpp/package.json"));
const {getLlama} = await import(require.resolve("node-llama-cpp"));

function parseArgs(argv) {
  const a = {threads: 1, generate: 64};
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i], value = argv[++i];
    if (value === undefined) throw new Error(`missing value after ${flag}`);
    if (flag === "--model") a.model = value;
    else if (flag === "--tokens") a.tokens = value.split(",").map(Number);
    else if (flag === "--generate") a.generate = Number(value);
    else if (flag === "--threads") a.threads = Number(value);
    else throw new Error(`unknown argument ${flag}`);
  }
  if (!a.model || !a.tokens) throw new Error("--model and --tokens are required");
  return a;
}

const args = parseArgs(process.argv.slice(2));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: args.model});
const context = await model.createContext({
  contextSize: args.tokens.length + args.generate + 16,
  threads: args.threads,
});
const sequence = context.getSequence();
const generated = [];
const start = process.hrtime.bigint();
let first = 0n;
for await (const t of sequence.evaluate(args.tokens, {temperature: 0, yieldEogToken: true})) {
  if (generated.length === 0) first = process.hrtime.bigint();
  generated.push(t);
  if (generated.length >= args.generate) break;
}
const end = process.hrtime.bigint();
const prefillSeconds = Number(first - start) / 1e9;
const decodeSeconds = Number(end - first) / 1e9;
process.stdout.write(
    JSON.stringify({
      prompt_tokens: args.tokens.length,
      generated_tokens: generated.length,
      prompt_tokens_per_s: args.tokens.length / prefillSeconds,
      tokens_per_s: generated.length > 1 ? (generated.length - 1) / decodeSeconds : 0,
      threads: args.threads,
      kv_cache: [context.kvCacheKeyType, context.kvCacheValueType],
      tokens: generated,
    }) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
