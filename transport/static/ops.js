// Vigil's operator page: plain JavaScript, no build step. Everything comes from the ops endpoints
// (Authorization: Bearer <operator token>) and the telemetry WebSocket (?token=, as a browser cannot set
// headers on a WebSocket). The token lives in sessionStorage: gone when the tab closes.
"use strict";

(() => {
  const TOKEN_KEY = "vigil.opsToken";
  const POLL_MS = 2000;          // tree, figures, breakers
  const DEAD_LETTER_MS = 5000;   // the dead-letter list
  const RECONNECT_MS = [500, 1000, 2000, 5000];
  const MAX_EVENTS = 200;
  const $ = (id) => document.getElementById(id);

  let token = null;
  let socket = null;
  let timers = [];
  let reconnects = 0;
  let lastPointAt = null;
  let points = [];
  let maxPoints = 600;
  let treeRefresh = null;
  let noOutbox = false;

  class Refused extends Error {}

  // -- HTTP ---------------------------------------------------------------------------------------
  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options, cache: "no-store",
      headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
    });
    if (response.status === 401) throw new Refused("the operator token was refused (401)");
    let body = null;
    const text = await response.text();
    if (text) { try { body = JSON.parse(text); } catch (_) { body = text; } }
    if (!response.ok) {
      const message = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  const fmt = (value, digits = 1) => value === null || value === undefined ? "–"
    : (typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(digits)) : String(value));

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  // -- the supervision tree -----------------------------------------------------------------------
  function nodeItem(node) {
    const failure = node.lastFailure;
    const line = el("span", { class: "node" },
      el("span", { class: "name", text: node.name }),
      el("span", { class: "kind", text: node.kind }),
      el("span", { class: "state", "data-state": node.state, text: node.state }),
      el("span", { class: "restarts", "data-nonzero": node.restarts > 0, text: `restarts ${node.restarts}` }));
    if (node.mailbox) line.append(el("span", { class: "mailbox", text: `mailbox ${node.mailbox.depth}/${node.mailbox.capacity}` }));
    if (node.kind === "keyed") line.append(el("span", { class: "mailbox", text: `live ${fmt(node.live)}` }));
    if (failure) {
      line.append(el("span", { class: "last-failure", title: String(failure.at),
        text: `${failure.type}: ${failure.message}` }));
    }
    const item = el("li", { "data-path": node.path, "data-restarts": node.restarts }, line);
    if (node.children && node.children.length) {
      item.append(el("ul", {}, ...node.children.map(nodeItem)));
    }
    return item;
  }

  function renderTree(tree) {
    $("tree").replaceChildren(nodeItem(tree));
    renderProjection(tree.projection || null);
  }

  async function refreshTree() {
    renderTree(await api("/v1/ops/supervision"));
  }

  // A burst of lifecycle events becomes one fetch: the first one goes at once, the rest ride along.
  function scheduleTreeRefresh() {
    if (treeRefresh) { treeRefresh.again = true; return; }
    treeRefresh = { again: false };
    const run = async () => {
      try { await refreshTree(); } catch (error) { handleError(error); }
      if (treeRefresh && treeRefresh.again) { treeRefresh.again = false; setTimeout(run, 100); }
      else treeRefresh = null;
    };
    run();
  }

  // -- outbox, projections, breakers, lanes, pool -------------------------------------------------
  function figures(target, pairs) {
    target.replaceChildren(...pairs.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { "data-name": name, text: fmt(value) })]));
  }

  function rows(table, items, cells) {
    table.tBodies[0].replaceChildren(...items.map((item) => el("tr", {}, ...cells(item).map((c) => el("td", { text: fmt(c) })))));
  }

  function renderProjection(projection) {
    if (!projection) {
      figures($("outbox"), [["outbox", "not served by this process"]]);
      rows($("projection"), [], () => []);
      return;
    }
    const o = projection.outbox;
    figures($("outbox"), o ? [["pending", o.pending], ["processing", o.processing], ["completed", o.completed],
      ["dead", o.dead], ["oldest pending s", o.oldestPendingAgeSeconds], ["figures age s", projection.figuresAgeSeconds]]
      : [["outbox", "not read yet"]]);
    rows($("projection"), projection.handlers || [],
      (h) => [h.handler, h.lagEvents, h.lagSeconds, h.dead, h.breaker || "–"]);
    renderBreakers.projection = projection.breakers || {};
  }

  function renderBreakers(health) {
    const items = [];
    for (const [name, value] of Object.entries(health.circuitBreakers || {})) {
      const state = typeof value === "string" ? value : value.state;
      const detail = typeof value === "string" ? "" : Object.entries(value).filter(([k]) => k !== "state")
        .map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
      items.push([name, state, detail]);
    }
    for (const [name, state] of Object.entries(renderBreakers.projection || {})) items.push([`projection ${name}`, state, ""]);
    for (const [name, check] of Object.entries(health.checks || {})) {
      items.push([`check ${name}`, check.status, check.detail || ""]);
    }
    items.push(["health", health.status, ""]);
    rows($("breakers"), items, (item) => item);
  }

  async function refreshHealth() {
    const response = await fetch("/health", { cache: "no-store" });
    renderBreakers(await response.json());
  }

  // -- charts (inline SVG) ------------------------------------------------------------------------
  const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed"];

  function drawChart(svg, series, latest) {
    const width = 300, height = 80, pad = 4;
    const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    const top = Math.max(1e-9, ...all) * 1.1;
    const n = Math.max(2, ...series.map((s) => s.values.length));
    svg.replaceChildren(...series.map((s, i) => {
      const coords = [];
      s.values.forEach((v, j) => {
        if (v === null || v === undefined) return;
        const x = (width * (j + (n - s.values.length))) / (n - 1);
        const y = height - pad - ((height - 2 * pad) * v) / top;
        coords.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      });
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", coords.join(" "));
      line.setAttribute("stroke", COLORS[i % COLORS.length]);
      line.setAttribute("data-series", s.name);
      return line;
    }));
    latest.textContent = series.map((s) => {
      const last = s.values.length ? s.values[s.values.length - 1] : null;
      return series.length > 1 ? `${s.name} ${fmt(last)}` : fmt(last, 2);
    }).join(" · ");
    svg.dataset.points = String(Math.max(0, ...series.map((s) => s.values.length)));
    svg.dataset.max = all.length ? fmt(Math.max(...all), 2) : "";
  }

  function renderCharts() {
    const take = (key) => points.map((p) => p[key]);
    drawChart($("chart-rate"), [{ name: "rate", values: take("requestRate") }], $("latest-rate"));
    drawChart($("chart-p99"), [{ name: "p99", values: take("p99Ms") }], $("latest-p99"));
    const lanes = [...new Set(points.flatMap((p) => Object.keys(p.lanes || {})))].sort();
    drawChart($("chart-lanes"), lanes.map((lane) => ({ name: lane, values: points.map((p) => (p.lanes || {})[lane] ?? null) })),
      $("latest-lanes"));
    drawChart($("chart-outbox"), [{ name: "pending", values: take("outboxPending") }], $("latest-outbox"));
    drawChart($("chart-restarts"), [{ name: "restarts", values: take("restarts") }], $("latest-restarts"));
  }

  async function refreshSummary() {
    const query = lastPointAt === null ? "" : `?since=${encodeURIComponent(lastPointAt)}`;
    const summary = await api(`/v1/ops/summary${query}`);
    maxPoints = Math.max(2, Math.round(600 / Math.max(1, summary.intervalSeconds)));
    if (summary.points.length) {
      points = points.concat(summary.points).slice(-maxPoints);
      lastPointAt = summary.points[summary.points.length - 1].at;
    }
    renderCharts();
    rows($("lanes"), summary.lanes, (l) => [l.lane, l.depth, l.capacity, l.drainPerSecond]);
    const pool = summary.pool;
    figures($("pool"), pool ? [["in use", pool.inUse], ["open", pool.open], ["max", pool.maxSize]]
      : [["pool", "no database in this process"]]);
  }

  // -- dead letters -------------------------------------------------------------------------------
  async function refreshDeadLetters() {
    if (noOutbox) return;
    let page;
    try {
      page = await api("/v1/ops/outbox/dead-letters?limit=100");
    } catch (error) {
      if (error.status !== 404) throw error;
      noOutbox = true;  // a worker-less tree or an operators-only process: not asked again this session
      $("dead-letters-status").textContent = "no outbox in this process";
      return;
    }
    const body = $("dead-letters").tBodies[0];
    body.replaceChildren(...page.items.map((d) => {
      const replay = el("button", { type: "button", class: "replay", "data-id": d.id, text: "Replay" });
      const discard = el("button", { type: "button", class: "discard", "data-id": d.id, text: "Discard" });
      replay.addEventListener("click", () => act(d.id, "replay"));
      discard.addEventListener("click", () => act(d.id, "discard"));
      return el("tr", { "data-id": d.id },
        ...[d.id, d.type, d.userId, d.handler, d.attempts, d.lastError, d.createdAt].map((c) => el("td", { text: fmt(c) })),
        el("td", {}, replay, discard));
    }));
    if (!page.items.length && !$("dead-letters-status").dataset.sticky) $("dead-letters-status").textContent = "no dead letters";
  }

  async function act(id, action) {
    const status = $("dead-letters-status");
    if (action === "discard" && !window.confirm(`Discard event ${id}? It will not be retried.`)) return;
    try {
      if (action === "replay") await api(`/v1/ops/outbox/${id}/replay`, { method: "POST" });
      else await api(`/v1/ops/outbox/${id}`, { method: "DELETE" });
      status.textContent = `${action === "replay" ? "Replayed" : "Discarded"} event ${id}`;
    } catch (error) {
      if (error instanceof Refused) return handleError(error);
      status.textContent = `Could not ${action} event ${id}: ${error.message}`;
    }
    status.dataset.sticky = "1";
    await refreshDeadLetters().catch(handleError);
  }

  // -- live telemetry -----------------------------------------------------------------------------
  function showEvent(event) {
    const when = event.timestamp || fmt(event.at, 3);
    const error = event.errorType ? ` ${event.errorType}: ${event.errorMessage || ""}` : "";
    const detail = event.detail ? ` ${typeof event.detail === "string" ? event.detail : JSON.stringify(event.detail)}` : "";
    const list = $("events");
    list.prepend(el("li", { "data-kind": event.kind, text: `${when} ${event.kind} ${event.path}${error}${detail}` }));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ops/telemetry?token=${encodeURIComponent(token)}`);
    socket = ws;
    ws.onopen = () => { reconnects = 0; setStatus("live", "live"); scheduleTreeRefresh(); };
    ws.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      showEvent(event);
      scheduleTreeRefresh();
    };
    ws.onclose = (close) => {
      if (socket !== ws) return;  // replaced or logged out
      socket = null;
      if (close.code === 4401) { logout("the operator token was refused by the telemetry stream"); return; }
      setStatus("polling", `telemetry closed (${close.code}); polling`);
      const delay = RECONNECT_MS[Math.min(reconnects++, RECONNECT_MS.length - 1)];
      timers.push(setTimeout(() => { if (token) connect(); }, delay));
    };
  }

  // -- session ------------------------------------------------------------------------------------
  function handleError(error) {
    if (error instanceof Refused) { logout(error.message); return; }
    setStatus("error", `error: ${error.message}`);
  }

  function every(ms, fn) {
    const tick = () => fn().catch(handleError);
    tick();
    timers.push(setInterval(tick, ms));
  }

  async function start(candidate) {
    token = candidate;
    let tree;
    try {
      tree = await api("/v1/ops/supervision");
    } catch (error) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("login-error").textContent = error instanceof Refused ? "The operator token was refused." : `Cannot reach the server: ${error.message}`;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("login-error").textContent = "";
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    renderTree(tree);
    connect();
    every(POLL_MS, refreshTree);
    every(POLL_MS, refreshSummary);
    every(POLL_MS, refreshHealth);
    every(DEAD_LETTER_MS, refreshDeadLetters);
  }

  function logout(reason) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    timers.forEach((t) => { clearInterval(t); clearTimeout(t); });
    timers = [];
    const ws = socket;
    socket = null;
    if (ws) ws.close();
    points = []; lastPointAt = null; noOutbox = false;
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = reason || "";
    setStatus("idle", "not connected");
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (submit) => {
      submit.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (value) start(value);
    });
    $("logout").addEventListener("click", () => logout(""));
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) start(saved);
  });
})();
