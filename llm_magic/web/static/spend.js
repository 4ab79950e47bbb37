// The spend page: a snapshot of /api/spend, then a new one from /api/spend/events (SSE) each
// time the ledger changes. The numbers are Ledger.summary()'s, formatted, never recomputed.
const $ = (id) => document.getElementById(id);

const COLUMNS = [
  ["calls", "calls", (v) => String(v)],
  ["errors", "errors", (v) => String(v)],
  ["input_tokens", "input tok", (v) => String(v)],
  ["output_tokens", "output tok", (v) => String(v)],
  ["cost_usd", "cost", (v) => (v === null ? "–" : `$${v.toFixed(6)}`)],
  ["p50_latency_s", "p50 latency", (v) => (v === null ? "–" : `${v.toFixed(3)} s`)],
  ["p95_latency_s", "p95 latency", (v) => (v === null ? "–" : `${v.toFixed(3)} s`)],
  ["p50_ttft_s", "p50 TTFT", (v) => (v === null ? "–" : `${v.toFixed(3)} s`)],
  ["p95_ttft_s", "p95 TTFT", (v) => (v === null ? "–" : `${v.toFixed(3)} s`)],
];

function table(el, key, rows) {
  el.replaceChildren();
  const head = el.createTHead().insertRow();
  for (const label of [key, ...COLUMNS.map((c) => c[1])]) {
    const th = document.createElement("th");
    th.textContent = label;
    head.append(th);
  }
  const body = el.createTBody();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = COLUMNS.length + 1;
    td.textContent = "no calls today";
    td.className = "muted";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    tr.dataset.key = row[key];
    tr.insertCell().textContent = row[key];
    for (const [name, , fmt] of COLUMNS) {
      const td = tr.insertCell();
      td.dataset.col = name;
      td.textContent = fmt(row[name]);
    }
  }
}

function show(s) {
  $("date").textContent = `${s.day} (UTC)`;
  $("spent").textContent = `$${s.spent_usd.toFixed(6)}`;
  const budget = s.budget_usd;
  $("budget").textContent = budget === null ? "no daily budget set" : `of $${budget.toFixed(2)}`;
  $("share").textContent = budget ? `${((100 * s.spent_usd) / budget).toFixed(2)} % of the daily budget` : "";
  const share = budget ? Math.min(1, s.spent_usd / budget) : 0;
  const fill = $("bar-fill");
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  fill.className = budget && s.spent_usd >= budget * s.alert_threshold ? "alert" : "";
  $("totals").textContent = `${budget ? "· " : ""}${s.calls} calls today · ${s.rows} in the ledger`;
  table($("by-model"), "model", s.by.model);
  table($("by-agent"), "agent", s.by.agent);
  table($("by-user"), "user", s.by.user);
  document.body.dataset.rows = String(s.rows);
}

async function start() {
  const r = await fetch("/api/spend", { credentials: "same-origin" });
  if (r.ok) show(await r.json());
  const events = new EventSource("/api/spend/events");
  events.addEventListener("snapshot", (e) => {
    show(JSON.parse(e.data));
    $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  });
  events.onopen = () => { $("live").textContent = "live"; };
  events.onerror = () => { $("live").textContent = "reconnecting…"; };
}

start();
