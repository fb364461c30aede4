// Loads the page at / of `lora serve` in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), asks one prompt of the base and of an adapter side by side, checks both
// answers are on the page and equal the API's, chats one turn, and writes a screenshot.
//   env: LORA_BIN, LORA_MODEL, ADAPTERS (holding a1/), OUT_DIR
import assert from "node:assert/strict";
import { mkdirSync, rmSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "./lora_server.mjs";

const { LORA_BIN, LORA_MODEL, ADAPTERS, OUT_DIR } = process.env;
const server = await startServer(LORA_BIN, [
  "--model", LORA_MODEL, "--adapter-path", `story=${ADAPTERS}/a1`, "--api-key", "page-key"]);
const profile = mkdtempSync(join(tmpdir(), "lora-chromium-"));
let context = null;
let failed = false;
try {
  // A fresh profile (playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 760 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await page.fill("#api-key", "page-key");
  await page.dispatchEvent("#api-key", "change");
  await page.waitForSelector("#compare-adapter option[value=story]", { state: "attached" });

  const prompt = "Tell me a story about a cat";
  await page.fill("#compare-prompt", prompt);
  await page.selectOption("#compare-adapter", "story");
  await page.fill("#compare-scale", "1");
  await page.fill("#max-tokens", "40");
  await page.click("#compare-send");
  await page.waitForSelector("#base-answer[data-done='1']");
  await page.waitForSelector("#adapter-answer[data-done='1']");
  const baseText = await page.textContent("#base-answer");
  const adapterText = await page.textContent("#adapter-answer");

  // The same requests through the API.
  const ask = async (model) => {
    const res = await fetch(server.url + "/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer page-key" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: prompt }],
                             max_tokens: 40, temperature: 0, adapter_scale: 1 }),
    });
    return (await res.json()).choices[0].message.content;
  };
  assert.ok(baseText.length > 0 && adapterText.length > 0, "both answers are on the page");
  assert.equal(baseText, await ask("stories260K"));
  assert.equal(adapterText, await ask("story"));
  assert.notEqual(baseText, adapterText);
  console.log("base:    " + JSON.stringify(baseText));
  console.log("adapter: " + JSON.stringify(adapterText));

  await page.selectOption("#chat-model", "story");
  await page.fill("#chat-input", "Once upon a time");
  await page.click("#chat-send");
  await page.waitForSelector("#chat-log .assistant[data-done='1']");
  assert.ok((await page.textContent("#chat-log .assistant")).length > 0, "the chat answered");

  mkdirSync(OUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUT_DIR, "page.png"), fullPage: true });
  console.log("screenshot: " + join(OUT_DIR, "page.png"));
} catch (e) {
  failed = true;
  console.log("FAIL " + (e.stack || e) + "\n" + server.stderr());
} finally {
  if (context) await context.close();
  await server.stop();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
