// flowhost's operator page: reads this host's JSON routes every 2 s and draws them; its two
// actions (re-queue parked records, roll a plugin back) call the admin routes with the token
// typed in, which lives in this page's memory only (never stored, never put in a URL).
// Everything shown comes from records and plugins, so it is written as text, never as HTML.
"use strict";

const EVERY_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const PARKED_LIMIT = 100;

let token = "";
const samples = []; // {t, intake, keyed: {model: n}}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function short(version) {
  return version ? String(version).slice(0, 12) : "–";
}

function when(text) {
  if (!text) return "–";
  const d = new Date(text);
  return isNaN(d) ? String(text) : d.toLocaleString();
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind || "info";
  m.hidden = !text;
}

async function getJson(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

async function getLines(path) {
  const r = await fetch(path);
  const text = await r.text();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${text}`);
  return {
    lines: text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l)),
    next: r.headers.get("x-next-after"),
  };
}

async function admin(path) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(path, { method: "POST", headers });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

// A polyline of rates over the window, scaled to the box.
function drawChart(svg, points) {
  svg.replaceChildren();
  if (points.length < 2) {
    const text = document.createElementNS("http://www.w3.org/2000/svg", "text");
    text.setAttribute("x", "2");
    text.setAttribute("y", "14");
    text.setAttribute("class", "collecting");
    text.textContent = "collecting…";
    svg.append(text);
    return;
  }
  const [w, h] = svg.getAttribute("viewBox").split(" ").slice(2).map(Number);
  const t0 = points[points.length - 1].t - WINDOW_MS;
  const max = Math.max(1, ...points.map((p) => p.v));
  const xy = points
    .map((p) => `${(((p.t - t0) / WINDOW_MS) * w).toFixed(1)},${(h - 2 - (p.v / max) * (h - 4)).toFixed(1)}`)
    .join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = `up to ${Math.round(max)}/s`;
  svg.append(title, line);
}

// Rates between consecutive samples of `pick(sample)`.
function rates(pick) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.t - a.t) / 1000;
    const va = pick(a), vb = pick(b);
    if (dt > 0 && va != null && vb != null) out.push({ t: b.t, v: Math.max(0, (vb - va) / dt) });
  }
  return out;
}

function renderReady(ready) {
  const badge = $("ready");
  const body = ready.body || {};
  const degraded = body.degraded || [];
  let state = ready.status === 200 ? (degraded.length ? "degraded" : "ready") : "not-ready";
  badge.dataset.state = state;
  badge.textContent = { ready: "ready", degraded: "ready, degraded", "not-ready": "not ready" }[state];
  $("reasons").replaceChildren(...[...(body.reasons || []), ...degraded].map((r) => el("li", {}, r)));
}

function renderModels(models, plugins) {
  const since = Object.fromEntries((plugins.plugins || []).map((p) => [p.model, p.since]));
  const tbody = $("models").querySelector("tbody");
  tbody.replaceChildren();
  for (const m of models.models || []) {
    const c = m.counts || {};
    const parked = Object.entries(c.parked || {});
    const parkedCell = el("td", { "data-count": "parked" });
    if (!parked.length) parkedCell.append("0");
    for (const [reason, n] of parked) parkedCell.append(el("div", {}, `${reason} ${n}`));
    let state = m.state || "";
    const cooling = (plugins.failing_here || []).filter((b) => b.model === m.model && b.cooling);
    if (cooling.length) state += ` (cooling down here: ${cooling.map((b) => b.stage).join(", ")})`;
    if ((m.retrying_here || []).length) state += " (retrying here)";
    const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    chart.setAttribute("viewBox", "0 0 120 28");
    chart.setAttribute("preserveAspectRatio", "none");
    chart.setAttribute("class", "chart");
    chart.setAttribute("role", "img");
    chart.setAttribute("aria-label", `${m.model}: records keyed per second`);
    const r = rates((s) => s.keyed[m.model]);
    drawChart(chart, r);
    const rollback = el("button", { class: "quiet", type: "button", title: "make the previous version current" }, "Roll back");
    rollback.addEventListener("click", () => rollBack(m.model));
    const row = el(
      "tr",
      { "data-model": m.model },
      el("td", {}, el("strong", {}, m.model), el("div", { class: "muted" }, m.kind || "")),
      el("td", { "data-field": "state" }, state),
      el(
        "td",
        { "data-field": "version" },
        el("code", { title: m.plugin_version || "" }, short(m.plugin_version)),
        el("div", { class: "muted" }, `since ${when(since[m.model])}`),
      ),
      el("td", { class: "n", "data-count": "references" }, c.references ?? 0),
      el("td", { class: "n", "data-count": "keyed" }, c.keyed ?? 0),
      el("td", { class: "n", "data-count": "pending" }, c.pending ?? 0),
      el("td", { class: "n", "data-count": "dirty" }, c.dirty ?? 0),
      parkedCell,
      el("td", {}, chart, el("div", { class: "muted" }, r.length ? `${Math.round(r[r.length - 1].v)}/s` : "")),
      el("td", {}, rollback),
    );
    tbody.append(row);
  }
  $("intake-total").textContent = `(${models.intake ?? 0} in all)`;
  const intake = rates((s) => s.intake);
  drawChart($("intake-chart"), intake);
  $("intake-rate").textContent = intake.length ? Math.round(intake[intake.length - 1].v) : "–";
  // Keep the parked filter's models in step.
  const select = $("parked-model");
  const names = (models.models || []).map((m) => m.model);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (names.join() !== have.join()) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(chosen) ? chosen : "";
  }
}

function renderPlugins(plugins) {
  const box = $("plugins");
  box.replaceChildren();
  for (const p of plugins.plugins || []) {
    const earlier = (p.previous || []).map((v) =>
      el("li", {}, el("code", { title: v.version }, short(v.version)), ` last current ${when(v.last_current)}`),
    );
    const views = p.views || {};
    box.append(
      el(
        "div",
        { class: "plugin", "data-plugin": p.model },
        el("strong", {}, p.model),
        " ",
        el("code", { title: p.version }, short(p.version)),
        el("span", { class: "muted" }, ` ${p.state} · from ${p.source} since ${when(p.since)} · views ${views.current ?? 0}/${views.total ?? 0} of this version`),
        p.last_error ? el("div", { class: "muted" }, `last refused file ${p.last_error.file}: ${p.last_error.error}`) : "",
        views.failed
          ? el(
              "div",
              { class: "muted", "data-failed": p.model },
              `${views.failed} references whose projection failed (re-tried on new records, a new version, or parked requeue)`,
              el(
                "ul",
                { class: "plain" },
                ...(views.failed_examples || []).map((f) => el("li", {}, el("code", {}, f.reference), `: ${f.error}`)),
              ),
            )
          : "",
        p.shadow
          ? el(
              "div",
              { class: "muted", "data-shadow": p.model },
              "shadow run: candidate ",
              el("code", { title: p.shadow.candidate }, short(p.shadow.candidate)),
              ` · ${p.shadow.records} records compared, ${p.shadow.skipped} skipped · ${p.shadow.record_diffs} records and ${p.shadow.view_diffs} views differ (flowhost plugins diff ${p.model})`,
            )
          : "",
        earlier.length ? el("ul", { class: "plain muted" }, el("li", {}, "earlier versions:"), ...earlier) : "",
      ),
    );
  }
  const refused = plugins.refused_files || [];
  $("refused-files").replaceChildren(
    ...(refused.length ? refused.map((f) => el("li", {}, el("code", {}, f.file), `: ${f.error}`)) : [el("li", { class: "muted" }, "none")]),
  );
}

function renderHosts(hosts) {
  const tbody = $("hosts").querySelector("tbody");
  tbody.replaceChildren();
  $("host").textContent = hosts.this_host ? `host ${hosts.this_host}` : "";
  for (const h of hosts.hosts || []) {
    const holds = (h.leases || []).map((l) => `${l.stage} ${l.model}`).join(", ");
    tbody.append(
      el(
        "tr",
        {},
        el("td", {}, h.id, h.this ? el("span", { class: "muted" }, " (this one)") : ""),
        el("td", {}, h.listen || "–"),
        el("td", {}, h.live ? "yes" : "no"),
        el("td", {}, when(h.started)),
        el("td", { class: "details" }, holds || "–"),
      ),
    );
  }
}

function parkedQuery() {
  const q = new URLSearchParams();
  if ($("parked-model").value) q.set("model", $("parked-model").value);
  if ($("parked-reason").value) q.set("reason", $("parked-reason").value);
  return q;
}

async function refreshParked() {
  const q = parkedQuery();
  q.set("limit", String(PARKED_LIMIT));
  const { lines, next } = await getLines(`/v1/parked?${q}`);
  const tbody = $("parked").querySelector("tbody");
  tbody.replaceChildren(
    ...lines.map((p) =>
      el(
        "tr",
        { "data-reason": p.reason },
        el("td", {}, p.model),
        el("td", {}, p.reason),
        el("td", {}, p.source?.system ?? ""),
        el("td", {}, p.id),
        el("td", { class: "n" }, p.attempts ?? ""),
        el("td", { class: "details" }, p.details ?? ""),
      ),
    ),
  );
  $("parked-more").textContent = lines.length
    ? next ? `the first ${lines.length} shown; more match` : `${lines.length} shown`
    : "no parked records match";
}

async function refresh() {
  try {
    const [ready, models, plugins, hosts] = await Promise.all([
      getJson("/health/ready"),
      getJson("/v1/models"),
      getJson("/v1/plugins"),
      getJson("/v1/hosts"),
    ]);
    const now = Date.now();
    if (models.status === 200) {
      samples.push({
        t: now,
        intake: models.body.intake,
        keyed: Object.fromEntries((models.body.models || []).map((m) => [m.model, m.counts?.keyed])),
      });
      while (samples.length && samples[0].t < now - WINDOW_MS) samples.shift();
    }
    renderReady(ready);
    if (models.status === 200) renderModels(models.body, plugins.body);
    if (plugins.status === 200) renderPlugins(plugins.body);
    if (hosts.status === 200) renderHosts(hosts.body);
    await refreshParked();
    $("updated").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("updated").textContent = `cannot reach this host: ${e.message}`;
  }
}

async function requeue() {
  const q = parkedQuery();
  const what = q.toString() ? ` (${q.toString().replaceAll("&", ", ")})` : "";
  const { status, body } = await admin(`/v1/parked/requeue?${q}`);
  if (status === 200) say(`re-queued ${body.requeued} parked records${what}`);
  else say(`re-queue refused (${status}): ${body.error || "no reason given"}`, "error");
  await refresh();
}

async function rollBack(model) {
  const { status, body } = await admin(`/v1/plugins/${encodeURIComponent(model)}/rollback`);
  if (status === 200) say(`${model}: version ${short(body.version || body.current)} is current now`);
  else say(`roll back of ${model} refused (${status}): ${body.error || "no reason given"}`, "error");
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").addEventListener("input", (e) => (token = e.target.value));
  $("requeue").addEventListener("click", requeue);
  $("parked-model").addEventListener("change", refreshParked);
  $("parked-reason").addEventListener("change", refreshParked);
  refresh();
  setInterval(refresh, EVERY_MS);
});
