// feedrec dashboard: draws the charts the server specified, refreshes the overview, and sends
// actions to the admin API with the token typed in the header. No network access but this server.
"use strict";

const charts = {};

function draw(canvas) {
  const source = document.getElementById(canvas.dataset.chart);
  if (!source) return;
  const spec = JSON.parse(source.textContent);
  spec.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, spec.options || {});
  const legend = (((spec.options.plugins || {}).legend || {}).labels || {});
  if (legend.filter === "hide-edges") legend.filter = (item) => !item.text.endsWith("(low)");
  if (charts[canvas.dataset.chart]) charts[canvas.dataset.chart].destroy();
  charts[canvas.dataset.chart] = new Chart(canvas, spec);
}

function drawAll() {
  document.querySelectorAll("canvas[data-chart]").forEach(draw);
}

function pick(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function format(value, how) {
  if (value === null || value === undefined) return "–";
  if (how === "pct") return (100 * value).toFixed(2) + " %";
  if (how === "int") return Math.round(value).toString();
  if (/^\d$/.test(how || "")) return Number(value).toFixed(Number(how));
  return String(value);
}

function when(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").slice(0, 19) + " UTC";
}

function stageRows(stages) {
  const body = document.querySelector("#stages tbody");
  if (!body) return;
  body.replaceChildren(...stages.map((s) => {
    const row = document.createElement("tr");
    for (const [v, how] of [[s.stage, null], [s.count, "int"], [s.p50_ms, "1"], [s.p99_ms, "1"]]) {
      const cell = document.createElement("td");
      cell.textContent = how ? format(v, how) : v;
      row.appendChild(cell);
    }
    return row;
  }));
}

async function refreshOverview() {
  try {
    const answer = await fetch("/dashboard/api/overview", { headers: { Accept: "application/json" } });
    if (!answer.ok) return;
    const o = await answer.json();
    document.querySelectorAll("[data-field]").forEach((el) => {
      const value = pick(o, el.dataset.field);
      el.textContent = el.dataset.field.endsWith("_at") || el.dataset.field === "now" ? when(value) : format(value, el.dataset.format);
    });
    for (const [id, spec] of [["ctr-chart", o.ctr_chart], ["latency-chart", o.latency_chart]]) {
      const chart = charts[id];
      if (chart) { chart.data.labels = spec.data.labels; chart.data.datasets = spec.data.datasets; chart.update("none"); }
    }
    stageRows(o.live.stages);
  } catch (err) {
    // The server is restarting or unreachable: keep what is shown, try again at the next tick.
  }
}

function flash(text, ok) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
}

async function act(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  const token = document.getElementById("admin-token").value || sessionStorage.getItem("feedrec-admin-token") || "";
  const headers = { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) };
  if (token) headers.Authorization = "Bearer " + token;
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.url, { method: button.dataset.method, headers });
    const body = await answer.json().catch(() => ({}));
    if (answer.ok) {
      flash("Done: " + JSON.stringify(body), true);
      setTimeout(() => window.location.reload(), 800);
    } else {
      flash("Refused (" + answer.status + "): " + (body.detail || answer.statusText), false);
    }
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const token = document.getElementById("admin-token");
  token.value = sessionStorage.getItem("feedrec-admin-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("feedrec-admin-token", token.value));
  document.querySelectorAll("button.action").forEach((b) => b.addEventListener("click", () => act(b)));
  drawAll();
  if (document.body.dataset.page === "overview") setInterval(refreshOverview, 5000);
  const pending = document.querySelector("[data-reload]");
  if (pending) setTimeout(() => window.location.reload(), 1000 * Number(pending.dataset.reload));
});
