// The page served at `/`: a chat with any served model, and one prompt answered by the base and
// by an adapter side by side. Plain HTML and JavaScript, no outside files; it talks to the same
// OpenAI endpoints as any client (streamed chat completions).
#pragma once

namespace lora::serve {

inline constexpr const char* kWebPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lora serve</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1c2230; }
  header { background: #1c2230; color: #fff; padding: 10px 18px; display: flex; gap: 16px;
           align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header label { font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.4fr); gap: 16px; padding: 16px; }
  section { background: #fff; border: 1px solid #d8dce4; border-radius: 8px; padding: 12px 14px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  textarea { width: 100%; box-sizing: border-box; min-height: 60px; font: inherit; }
  .row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
  .pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 12px; margin-top: 10px; }
  .answer { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #e2e5eb; border-radius: 6px; padding: 8px;
            min-height: 120px; background: #fbfcfd; }
  .answer h3 { font-size: 13px; margin: 0 0 6px; color: #56607a; }
  #chat-log { max-height: 420px; overflow-y: auto; }
  .msg { white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0; padding: 6px 8px; border-radius: 6px; }
  .user { background: #e7eefc; } .assistant { background: #eef7ee; }
  .error { color: #b00020; }
  button { font: inherit; padding: 4px 14px; }
</style>
</head>
<body>
<header>
  <h1>lora serve</h1>
  <label>API key <input id="api-key" type="password" size="12" placeholder="(none)"></label>
  <label>temperature <input id="temperature" type="number" value="0" min="0" max="2" step="0.1"
    style="width:4em"></label>
  <label>max tokens <input id="max-tokens" type="number" value="128" min="1" style="width:5em">
  </label>
  <span id="status"></span>
</header>
<main>
  <section>
    <h2>Chat</h2>
    <div class="row"><label>model <select id="chat-model"></select></label>
      <label>strength <input id="chat-scale" type="number" value="1" step="0.1" style="width:4em">
      </label></div>
    <div id="chat-log"></div>
    <textarea id="chat-input" placeholder="Say something"></textarea>
    <div class="row"><button id="chat-send">Send</button><button id="chat-clear">Clear</button></div>
  </section>
  <section>
    <h2>Base and adapter, side by side</h2>
    <textarea id="compare-prompt" placeholder="One prompt for both"></textarea>
    <div class="row">
      <label>adapter <select id="compare-adapter"></select></label>
      <label>strength <input id="compare-scale" type="number" value="1" step="0.1"
        style="width:4em"></label>
      <button id="compare-send">Compare</button>
    </div>
    <div class="pair">
      <div class="answer"><h3 id="base-title">base</h3><div id="base-answer"></div></div>
      <div class="answer"><h3 id="adapter-title">adapter</h3><div id="adapter-answer"></div></div>
    </div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let baseModel = "";
const history = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("api-key").value) h["Authorization"] = "Bearer " + $("api-key").value;
  return h;
}

async function loadModels() {
  const res = await fetch("/v1/models", { headers: headers() });
  const body = await res.json();
  if (!res.ok) { $("status").textContent = body.error ? body.error.message : res.statusText; return; }
  const models = body.data;
  baseModel = models[0].id;
  for (const sel of [$("chat-model"), $("compare-adapter")]) sel.textContent = "";
  for (const m of models) {
    $("chat-model").add(new Option(m.parent ? m.id + " (adapter)" : m.id + " (base)", m.id));
    if (m.parent) $("compare-adapter").add(new Option(m.id, m.id));
  }
  $("status").textContent = models.length - 1 + " adapter(s)";
}

// Streams a chat completion into `out`; resolves with the text.
async function stream(model, scale, messages, out) {
  const body = { model, messages, stream: true,
                 temperature: Number($("temperature").value),
                 max_tokens: Number($("max-tokens").value) };
  if (model !== baseModel) body.adapter_scale = Number(scale);
  out.classList.remove("error");
  out.dataset.done = "0";
  out.textContent = "";
  const res = await fetch("/v1/chat/completions",
                          { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    out.textContent = err.error ? err.error.message : res.statusText;
    out.classList.add("error");
    out.dataset.done = "1";
    return "";
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const data = JSON.parse(event.slice(6));
      if (data.error) { out.classList.add("error"); text += data.error.message; }
      else if (data.choices.length && data.choices[0].delta.content) text += data.choices[0].delta.content;
      out.textContent = text;
    }
  }
  out.dataset.done = "1";
  return text;
}

$("chat-send").onclick = async () => {
  const content = $("chat-input").value;
  if (!content) return;
  $("chat-input").value = "";
  history.push({ role: "user", content });
  const user = document.createElement("div");
  user.className = "msg user";
  user.textContent = content;
  const reply = document.createElement("div");
  reply.className = "msg assistant";
  $("chat-log").append(user, reply);
  const text = await stream($("chat-model").value, $("chat-scale").value, history, reply);
  history.push({ role: "assistant", content: text });
};
$("chat-clear").onclick = () => { history.length = 0; $("chat-log").textContent = ""; };

$("compare-send").onclick = async () => {
  const messages = [{ role: "user", content: $("compare-prompt").value }];
  const adapter = $("compare-adapter").value;
  $("base-title").textContent = baseModel + " (base)";
  $("adapter-title").textContent = adapter + " at strength " + $("compare-scale").value;
  await Promise.all([stream(baseModel, 1, messages, $("base-answer")),
                     stream(adapter, $("compare-scale").value, messages, $("adapter-answer"))]);
};
$("api-key").onchange = loadModels;
loadModels();
</script>
</body>
</html>
)HTML";

}  // namespace lora::serve
