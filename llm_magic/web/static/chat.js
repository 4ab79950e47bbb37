// The chat page: a model picker from /api/models, a prompt, Send and Stop; the answer grows as
// it streams, the footer shows tokens · cost · latency · TTFT from the usage event.
import { ChatClient } from "/static/client.js";

const $ = (id) => document.getElementById(id);
const client = new ChatClient();

function money(usd) {
  if (usd === null || usd === undefined) return "cost unknown";
  if (usd === 0) return "$0";
  return usd < 0.01 ? `$${usd.toFixed(6)}` : `$${usd.toFixed(4)}`;
}

export function usageLine(u) {
  const parts = [`${u.input_tokens} → ${u.output_tokens} tokens`, money(u.cost_usd)];
  if (u.latency_s !== null && u.latency_s !== undefined) parts.push(`${u.latency_s.toFixed(2)} s`);
  if (u.ttft_s !== null && u.ttft_s !== undefined) parts.push(`TTFT ${u.ttft_s.toFixed(2)} s`);
  parts.push(u.model);
  if (u.status !== "ok") parts.push(u.status);
  return parts.join(" · ");
}

async function loadModels() {
  const r = await fetch("/api/models", { credentials: "same-origin" });
  const pick = $("model");
  if (!r.ok) { pick.append(new Option("(models unavailable)", "")); return; }
  const { models, default: chosen } = await r.json();
  for (const m of models) pick.append(new Option(m, m, false, m === chosen));
}

function showProblem(e, text) {
  const answer = $("answer");
  answer.textContent = e.partial !== undefined && e.partial !== "" ? e.partial : text;
  const p = $("problem");
  p.textContent = e.message;
  p.hidden = false;
  p.dataset.kind = e.kind || "";
}

async function ask(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const answer = $("answer");
  answer.textContent = "";
  $("problem").hidden = true;
  $("usage").textContent = "";
  $("send").disabled = true;
  $("stop").disabled = false;
  $("state").textContent = "…";
  document.body.dataset.state = "streaming";
  let text = "";
  const done = await client.send(
    { messages: [{ role: "user", content: prompt }], model: $("model").value || null },
    {
      content: (_delta, all) => {
        text = all;
        answer.textContent = all;
        $("state").textContent = "streaming";
      },
      tool_call: (c) => { answer.textContent = `${text}\n[tool call ${c.name || ""}${c.arguments}]`; },
      usage: (u) => { $("usage").textContent = usageLine(u); },
      error: (e) => showProblem(e, text),
      heartbeat: () => { $("state").textContent = "waiting for the model…"; },
      reconnect: (n) => { $("state").textContent = `reconnecting (${n})…`; },
      start: () => { $("state").textContent = "streaming"; },
    },
  );
  $("state").textContent = done.stopped ? "stopped" : "";
  if (done.stopped) showProblem({ message: "stopped", kind: "stopped", partial: done.text }, text);
  $("send").disabled = false;
  $("stop").disabled = true;
  document.body.dataset.state = "done";
  document.body.dataset.reconnects = String(done.reconnects);
}

$("ask").addEventListener("submit", ask);
$("stop").addEventListener("click", () => {
  $("state").textContent = "stopping…";
  client.stop();
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask").requestSubmit();
});
loadModels();
