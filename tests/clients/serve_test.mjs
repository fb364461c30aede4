// Drives `lora serve` with the real `openai` client: completions and chat, streamed and not,
// adapters chosen per request (by model name and scale, and llama-server's `lora` list), adapters
// loaded and unloaded at run time, greedy answers equal to `lora generate`, bad requests answered
// with the right status and error object while the server keeps serving, a full queue refused
// with 429 and a client that leaves freeing its slot, concurrent answers (batched decode steps)
// equal to the same answers one at a time, and a server stopped mid-answer: the streamed client
// raises the error event, the begun non-streamed answer and the waiting one raise the 503 status.
//   env: LORA_BIN, LORA_MODEL (stories260K), ADAPTERS (folder holding a1/, a2/, escape -> outside)
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import OpenAI from "openai";
import { startServer } from "./lora_server.mjs";

const { LORA_BIN, LORA_MODEL, ADAPTERS } = process.env;
const execFileAsync = promisify(execFile);
const KEY = "test-key";
const BASE = "stories260K";

// Not execFileSync: a blocked event loop would miss the server closing an idle keep-alive
// connection, and the client's next request on it would fail.
async function generate(args) {
  const run = execFileAsync(LORA_BIN, ["--json", "generate", "--model", LORA_MODEL, ...args]);
  run.child.stdin.end();  // --chat reads turns after the first until its input ends
  const { stdout } = await run;
  return stdout.trim().split("\n").map((l) => JSON.parse(l));
}

async function post(url, path, body, { key = KEY, raw = false } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  const res = await fetch(url + path, { method: "POST", headers, body: raw ? body : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* left null */ }
  return { status: res.status, json, text };
}

function expectError(r, status, param) {
  assert.equal(r.status, status, r.text);
  assert.ok(r.json && r.json.error && typeof r.json.error.message === "string", r.text);
  assert.ok(typeof r.json.error.type === "string", r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

async function collect(stream, chat) {
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    const c = chunk.choices[0];
    text += chat ? (c.delta.content ?? "") : c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { text, finish, usage, chunks };
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

const server = await startServer(LORA_BIN, [
  "--model", LORA_MODEL, "--adapter-path", `story=${ADAPTERS}/a1`, "--adapter-dir", ADAPTERS,
  "--api-key", KEY, "--parallel", "2", "--queue-size", "2", "--max-body-bytes", "65536",
  "--max-tokens-limit", "20000", "--max-prompt-tokens", "256",
]);
const client = new OpenAI({ baseURL: server.url + "/v1", apiKey: KEY, maxRetries: 0 });
const prompt = "Once upon a time";

test("models lists the base and the adapters", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [BASE, "story"]);
});

test("greedy completions equal lora generate, base and adapter at a scale", async () => {
  const base = await client.completions.create({ model: BASE, prompt, max_tokens: 40, temperature: 0 });
  const [want] = await generate(["--prompt", prompt, "--max-tokens", "40"]);
  assert.equal(base.choices[0].text, want.text);
  assert.equal(base.object, "text_completion");
  assert.equal(base.usage.prompt_tokens, want.prompt_tokens);
  assert.equal(base.usage.completion_tokens, want.generated_tokens);
  assert.equal(base.usage.total_tokens, want.prompt_tokens + want.generated_tokens);
  assert.equal(base.choices[0].finish_reason, "length");

  const adapted = await client.completions.create({
    model: "story", prompt, max_tokens: 40, temperature: 0, adapter_scale: 0.5 });
  const [wantAdapted] = await generate(["--prompt", prompt, "--max-tokens", "40",
    "--adapter-path", `${ADAPTERS}/a1`, "--adapter-scale", "0.5"]);
  assert.equal(adapted.choices[0].text, wantAdapted.text);
  assert.notEqual(adapted.choices[0].text, base.choices[0].text, "the adapter should change the text");

  // llama-server's per-request list on the base gives the same.
  const viaList = await client.completions.create({
    model: BASE, prompt, max_tokens: 40, temperature: 0, lora: [{ id: 0, scale: 0.5 }] });
  assert.equal(viaList.choices[0].text, wantAdapted.text);
  // Scale 0 is the base.
  const off = await client.completions.create({
    model: "story", prompt, max_tokens: 40, temperature: 0, adapter_scale: 0 });
  assert.equal(off.choices[0].text, base.choices[0].text);
});

test("streamed completions give the same text, a finish reason and usage", async () => {
  const whole = await client.completions.create({ model: "story", prompt, max_tokens: 30, temperature: 0 });
  const stream = await client.completions.create({
    model: "story", prompt, max_tokens: 30, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
  const got = await collect(stream, false);
  assert.equal(got.text, whole.choices[0].text);
  assert.equal(got.finish, "length");
  // Text, finish reason and usage each come in their own chunks (how many text chunks depends on
  // timing: tokens made faster than the network thread wakes share one).
  assert.ok(got.chunks >= 3, "chunks: " + got.chunks);
  assert.deepEqual(got.usage, whole.usage);
});

test("chat equals lora generate --chat, streamed and not, and stop strings cut", async () => {
  const messages = [{ role: "system", content: "Tell stories" }, { role: "user", content: prompt }];
  const whole = await client.chat.completions.create({ model: "story", messages, max_tokens: 24, temperature: 0 });
  const [want] = await generate(["--chat", "--system-prompt", "Tell stories", "--prompt", prompt,
    "--max-tokens", "24", "--adapter-path", `${ADAPTERS}/a1`]);
  assert.equal(whole.object, "chat.completion");
  assert.equal(whole.choices[0].message.role, "assistant");
  assert.equal(whole.choices[0].message.content, want.text);
  assert.equal(whole.usage.prompt_tokens, want.prompt_tokens);
  const stream = await client.chat.completions.create({
    model: "story", messages, max_tokens: 24, temperature: 0, stream: true });
  const got = await collect(stream, true);
  assert.equal(got.text, want.text);
  const text = want.text;
  assert.ok(text.length > 8, "a reply to cut: " + JSON.stringify(text));
  const stop = text.slice(5, 8);
  const stopped = await client.chat.completions.create({
    model: "story", messages, max_tokens: 24, temperature: 0, stop: [stop, "never appears"] });
  assert.equal(stopped.choices[0].message.content, text.slice(0, text.indexOf(stop)));
  assert.equal(stopped.choices[0].finish_reason, "stop");
});

test("seeded sampling repeats; another seed differs", async () => {
  const ask = (seed) => client.completions.create({
    model: BASE, prompt, max_tokens: 60, temperature: 1, top_k: 40, top_p: 0.95, min_p: 0.02,
    repetition_penalty: 1.1, seed });
  const [a, b, c] = [await ask(1), await ask(1), await ask(2)];
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.notEqual(a.choices[0].text, c.choices[0].text);
});

test("adapters load and unload at run time, only from the adapter folder", async () => {
  const loaded = await post(server.url, "/v1/load_lora_adapter", { lora_name: "second", lora_path: "a2" });
  assert.equal(loaded.status, 200, loaded.text);
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [BASE, "story", "second"]);
  const r = await client.completions.create({ model: "second", prompt, max_tokens: 30, temperature: 0 });
  const [want] = await generate(["--prompt", prompt, "--max-tokens", "30", "--adapter-path", `${ADAPTERS}/a2`]);
  assert.equal(r.choices[0].text, want.text);
  expectError(await post(server.url, "/v1/load_lora_adapter", { lora_name: "second", lora_path: "a2" }), 400);

  for (const bad of ["../a1", "a1/../../a1", "/etc", `${ADAPTERS}/a1`, "escape", "escape/"])
    expectError(await post(server.url, "/v1/load_lora_adapter", { lora_name: "x", lora_path: bad }), 400, "lora_path");
  expectError(await post(server.url, "/v1/load_lora_adapter", { lora_name: "x", lora_path: "nothing-here" }), 404);
  expectError(await post(server.url, "/v1/load_lora_adapter", { lora_name: "x" }), 400);

  assert.equal((await post(server.url, "/v1/unload_lora_adapter", { lora_name: "second" })).status, 200);
  expectError(await post(server.url, "/v1/unload_lora_adapter", { lora_name: "second" }), 404);
  await assert.rejects(client.completions.create({ model: "second", prompt, max_tokens: 4 }),
    (e) => e.status === 404 && e.error?.code === "model_not_found");

  // Unloaded while an answer uses it: the answer goes on with it to the end, unchanged.
  assert.equal((await post(server.url, "/v1/load_lora_adapter", { lora_name: "second", lora_path: "a2" })).status, 200);
  const [wantLong] = await generate(["--prompt", prompt, "--max-tokens", "1000", "--adapter-path", `${ADAPTERS}/a2`]);
  const streamed = await client.completions.create({ model: "second", prompt, max_tokens: 1000, temperature: 0, stream: true });
  const iter = streamed[Symbol.asyncIterator]();
  let text = (await iter.next()).value.choices[0].text;
  assert.equal((await post(server.url, "/v1/unload_lora_adapter", { lora_name: "second" })).status, 200);
  assert.equal((await health()).active, 1, "the answer should still run when its adapter is unloaded");
  const rest = await collect({ [Symbol.asyncIterator]: () => iter }, false);
  text += rest.text;
  assert.equal(rest.finish, wantLong.generated_tokens === 1000 ? "length" : "stop");
  assert.equal(text, wantLong.text);
});

test("bad requests get their status and an error object", async () => {
  const u = server.url;
  expectError(await post(u, "/v1/completions", "{not json", { raw: true }), 400);
  expectError(await post(u, "/v1/completions", { model: BASE, prompt, max_tokens: "ten" }), 400, "max_tokens");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt: 5 }), 400, "prompt");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt, temperature: -1 }), 400, "temperature");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt, max_tokens: 1e9 }), 400, "max_tokens");
  expectError(await post(u, "/v1/completions", { prompt }), 400, "model");
  expectError(await post(u, "/v1/chat/completions", { model: BASE, messages: "hi" }), 400, "messages");
  expectError(await post(u, "/v1/chat/completions", { model: BASE, messages: [{ role: "user", content: 3 }] }), 400, "messages");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt, lora: [{ id: 99 }] }), 400, "lora");
  expectError(await post(u, "/v1/completions", { model: "nope", prompt }), 404, "model");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt: "word ".repeat(400) }), 400, "prompt");
  expectError(await post(u, "/v1/completions", { model: BASE, prompt: "x".repeat(100000) }), 413);
  expectError(await post(u, "/v1/completions", { model: BASE, prompt }, { key: "" }), 401);
  expectError(await post(u, "/v1/completions", { model: BASE, prompt }, { key: "wrong" }), 401);
  const noKey = await fetch(u + "/v1/models");
  assert.equal(noKey.status, 401);
  expectError(await post(u, "/v1/nothing", {}), 404);
  await assert.rejects(new OpenAI({ baseURL: u + "/v1", apiKey: "wrong", maxRetries: 0 }).models.list(),
    (e) => e.status === 401);
  // Still serving.
  const ok = await client.completions.create({ model: BASE, prompt, max_tokens: 5, temperature: 0 });
  assert.equal(ok.usage.completion_tokens, 5);
});

async function health() {
  return (await fetch(server.url + "/health")).json();
}

async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail("timed out waiting for " + what + ": " + JSON.stringify(await health()));
}

test("a full queue answers 429, and clients that leave free their slots", async () => {
  // Long answers (past stories260K's trained length; the point is the time they take), streamed
  // and not: a streamed request gets its headers once its answer has begun, a whole one once it
  // is complete, so none is awaited here. Each kind holds a slot and a queue place.
  const running = [];
  for (let i = 0; i < 4; i++) {  // 2 slots + 2 queue places
    const ctl = new AbortController();
    const p = client.completions.create(
      { model: BASE, prompt, max_tokens: 20000, temperature: 0, stream: i % 2 === 0 }, { signal: ctl.signal });
    p.catch(() => {});  // aborted below
    running.push({ ctl, p });
    await waitFor(async () => { const h = await health(); return h.active + h.queued === i + 1; }, 15000, "accepted");
  }
  await waitFor(async () => (await health()).active === 2 && (await health()).queued === 2, 15000, "2 active, 2 queued");
  // Overload: every further request is refused at once, streamed or not, and nothing is queued.
  for (const stream of [false, true, false])
    await assert.rejects(client.completions.create({ model: BASE, prompt, max_tokens: 5, stream }),
      (e) => e.status === 429 && e.error?.code === "rate_limit_exceeded");
  expectError(await post(server.url, "/v1/chat/completions",
    { model: BASE, messages: [{ role: "user", content: prompt }] }), 429);
  assert.deepEqual(await health(), { status: "ok", active: 2, queued: 2 });
  // Undetected, 20000-token answers would hold their slots far longer than this wait.
  for (const r of running) r.ctl.abort();
  await waitFor(async () => { const h = await health(); return h.active === 0 && h.queued === 0; }, 5000, "slots freed");
  const ok = await client.completions.create({ model: BASE, prompt, max_tokens: 5, temperature: 0 });
  assert.equal(ok.choices[0].finish_reason, "length");
});

test("concurrent answers, batched, equal the answers given one at a time", async () => {
  const asks = [
    { model: BASE, prompt, max_tokens: 30 },
    { model: "story", prompt: "The cat", max_tokens: 24, adapter_scale: 0.5 },
    { model: "story", prompt: "Lily and Ben went to the park", max_tokens: 36 },
    { model: BASE, prompt: "One day", max_tokens: 20, lora: [{ id: 0, scale: 1.5 }] },
  ].map((a) => ({ ...a, temperature: 0 }));
  const alone = [];
  for (const a of asks) alone.push((await client.completions.create(a)).choices[0].text);
  // Two slots: two at a time run in one batched step, the others wait and join as slots free.
  const together = await Promise.all(asks.map((a, i) => i % 2
    ? client.completions.create({ ...a, stream: true }).then((s) => collect(s, false)).then((g) => g.text)
    : client.completions.create(a).then((r) => r.choices[0].text)));
  assert.deepEqual(together, alone);
  assert.notEqual(alone[1], alone[2]);
});

test("a DoRA adapter stacked with another is refused before any answer starts", async () => {
  assert.equal((await post(server.url, "/v1/load_lora_adapter", { lora_name: "dora", lora_path: "d1" })).status, 200);
  const single = await client.completions.create({ model: "dora", prompt, max_tokens: 8, temperature: 0 });
  assert.equal(single.usage.completion_tokens, 8);
  for (const stream of [false, true])
    await assert.rejects(client.completions.create({ model: "dora", prompt, max_tokens: 8, stream, lora: [{ id: 0 }] }),
      (e) => e.status === 400 && e.error?.param === "lora");
  assert.equal((await post(server.url, "/v1/unload_lora_adapter", { lora_name: "dora" })).status, 200);
});

test("stopping mid-answer: the error reaches every client, the process exits 0", async () => {
  // A server of its own, stopped by SIGTERM while two answers run and one waits for a slot.
  const own = await startServer(LORA_BIN, ["--model", LORA_MODEL, "--parallel", "2", "--queue-size", "1",
    "--max-tokens-limit", "20000"]);
  const c = new OpenAI({ baseURL: own.url + "/v1", apiKey: "none", maxRetries: 0 });
  const ownHealth = async () => (await fetch(own.url + "/health")).json();
  const long = { model: BASE, prompt, max_tokens: 20000, temperature: 0 };
  const streamed = await c.completions.create({ ...long, stream: true });
  const iter = streamed[Symbol.asyncIterator]();
  assert.ok((await iter.next()).value.choices[0].text.length > 0);
  const whole = c.completions.create(long);   // its answer begins, then fails mid-way
  whole.catch(() => {});
  await waitFor(async () => (await ownHealth()).active === 2, 15000, "2 active");
  const waiting = c.completions.create(long); // no slot: still waiting when the server stops
  waiting.catch(() => {});
  await waitFor(async () => (await ownHealth()).queued === 1, 15000, "1 queued");
  await new Promise((r) => setTimeout(r, 300));  // the non-streamed answer has begun
  const exited = new Promise((r) => own.child.on("exit", (code) => r(code)));
  own.child.kill("SIGTERM");
  // Streamed: an error event, which the openai client raises.
  await assert.rejects((async () => { for (;;) { if ((await iter.next()).done) return; } })(),
    (e) => e instanceof OpenAI.APIError && /stopping/.test(e.message));
  // Not streamed, begun: nothing was sent before the end, so the status is the failure's.
  await assert.rejects(whole, (e) => e instanceof OpenAI.InternalServerError && e.status === 503 &&
    e.error?.code === "service_unavailable" && /stopping/.test(e.message));
  // Waiting, not begun: its own status.
  await assert.rejects(waiting, (e) => e.status === 503 && e.error?.code === "service_unavailable");
  assert.equal(await exited, 0);
});

let failed = 0;
for (const t of tests) {
  try {
    await t.fn();
    console.log("ok   " + t.name);
  } catch (e) {
    failed++;
    console.log("FAIL " + t.name + "\n" + (e.stack || e));
  }
  if (!server.alive()) { console.log("the server died:\n" + server.stderr()); failed++; break; }
}
await server.stop();
console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
