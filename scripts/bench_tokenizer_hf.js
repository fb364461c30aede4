// HF `tokenizers` (npm, the Rust library) encoding throughput, measured the same way as
// bench/tokenizer_throughput.cpp: one encode call per line (or per file with --whole), one
// untimed warm-up pass, then timed passes until a second has gone by. Run it with
// UV_THREADPOOL_SIZE=1 RAYON_NUM_THREADS=1 (scripts/bench_tokenizer.sh does) for one thread.
//   node bench_tokenizer_hf.js TOKENIZER_JSON FILE... [--whole]
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(process.env.HF_TOKENIZERS_DIR, 'node_modules/tokenizers'));

async function main() {
  const args = process.argv.slice(2);
  const whole = args.includes('--whole');
  const [tokenizerFile, ...files] = args.filter((a) => a !== '--whole');
  let units = [];
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    if (whole) units.push(text);
    else units = units.concat(text.split('\n').filter((l) => l.length > 0));
  }
  const bytes = units.reduce((n, u) => n + Buffer.byteLength(u, 'utf8'), 0);
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokenizerFile);
  tok.disableTruncation();  // as in the goldens: a tokenizer.json may store a max length
  tok.disablePadding();
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  let tokens = 0;
  for (const u of units) tokens += (await tok.encode(u, null, { addSpecialTokens: false })).getIds().length;
  let passes = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < 1.0) {
    for (const u of units) await tok.encode(u, null, { addSpecialTokens: false });
    passes++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  const mbS = (bytes * passes) / elapsed / 1e6;
  console.log(JSON.stringify({ impl: 'hf-tokenizers-npm', mode: whole ? 'whole' : 'lines',
    MB_per_s: Number(mbS.toFixed(2)), bytes, calls: units.length, tokens, passes,
    load_s: Number(loadS.toFixed(3)) }));
}
main().catch((e) => { console.error(e); process.exit(1); });
