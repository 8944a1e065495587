// The mcpq live console: reads the REST API with the token it is given, once a second.
//
// A short poll rather than server-sent events: every number shown already has a guarded JSON
// endpoint, any API replica can answer any poll (nothing is held per tab), and a second is the
// pace a person reads at. A hidden tab does not poll.
"use strict";

const TOKEN_KEY = "mcpq.token";
const POLL_MS = 1000;
// Gateways change rarely and are read from PostgreSQL: every fifth poll.
const GATEWAY_POLLS = 5;
const JOBS_SHOWN = 50;

const state = { polls: 0, timer: null, selected: null, notice: "" };

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(method, path) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    signOut("The token was refused: enter another.");
  }
  if (!response.ok) {
    throw new ApiError(response.status, body.detail || response.statusText);
  }
  return body;
}

// --- formatting ----------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function badge(status) {
  return el("span", `badge ${status}`, status);
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "–";
}

function seconds(fromIso, toIso) {
  if (!fromIso) return "–";
  const end = toIso ? Date.parse(toIso) : Date.now();
  const s = Math.max(0, (end - Date.parse(fromIso)) / 1000);
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function terminal(status) {
  return status === "completed" || status === "failed" || status === "cancelled";
}

function progressBits(job) {
  const p = job.progress;
  if (!p) return [];
  const wrap = el("div", "progress");
  if (p.total) {
    const bar = el("div", "bar");
    const fill = el("span");
    fill.style.width = `${Math.min(100, (100 * p.progress) / p.total)}%`;
    bar.append(fill);
    wrap.append(bar);
  }
  const amount = p.total ? `${p.progress}/${p.total}` : `${p.progress}`;
  wrap.append(el("span", "progress-text", p.message ? `${amount} ${p.message}` : amount));
  return [wrap];
}

// --- jobs ------------------------------------------------------------------------------------

// One row per job id, made once and updated in place: a button a person is about to press stays
// the same element from one poll to the next.
function jobRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.id;
  for (const name of ["status", "item", "progress-cell", "time", "time", "time", "actions"]) {
    row.append(el("td", name));
  }
  row.addEventListener("click", () => select(job.id));
  return row;
}

function updateJobRow(row, job) {
  const [status, item, progress, created, waited, ran, actions] = row.cells;
  row.classList.toggle("selected", job.id === state.selected);
  if (row.dataset.status !== job.status) status.replaceChildren(badge(job.status));
  row.dataset.status = job.status;
  item.textContent = job.item || job.kind;
  progress.replaceChildren(...progressBits(job));
  created.textContent = clock(job.created_at);
  waited.textContent = seconds(job.created_at, job.started_at || job.finished_at);
  ran.textContent = job.started_at ? seconds(job.started_at, job.finished_at) : "–";
  if (terminal(job.status)) {
    actions.replaceChildren();
  } else if (!actions.firstChild) {
    const cancel = el("button", "cancel", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", (event) => {
      event.stopPropagation();
      cancelJob(job.id, cancel);
    });
    actions.append(cancel);
  }
}

function showJobs(tableId, jobs) {
  const body = $(tableId).querySelector("tbody");
  const old = new Map([...body.rows].map((row) => [row.dataset.jobId, row]));
  const rows = jobs.map((job) => {
    const row = old.get(job.id) || jobRow(job);
    updateJobRow(row, job);
    return row;
  });
  body.replaceChildren(...rows);
  $(`${tableId}-empty`).hidden = jobs.length > 0;
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    await api("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    notify(`Cancel of ${jobId} failed: ${error.message}`);
    button.disabled = false;
  }
  poll();
}

function select(jobId) {
  state.selected = jobId;
  for (const row of document.querySelectorAll("table.jobs tbody tr")) {
    row.classList.toggle("selected", row.dataset.jobId === jobId);
  }
  showDetail();
}

async function showDetail() {
  const jobId = state.selected;
  $("detail").hidden = !jobId;
  if (!jobId) return;
  let job;
  try {
    job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    job = null;
    $("detail-fields").replaceChildren(el("dt", null, "error"), el("dd", null, error.message));
  }
  if (state.selected !== jobId || !job) return;
  $("detail-id").textContent = job.id;
  const fields = [
    ["status", job.status], ["item", job.item], ["kind", job.kind], ["team", job.team],
    ["created", job.created_at], ["started", job.started_at || "–"], ["finished", job.finished_at || "–"],
    ["waited", job.started_at ? seconds(job.created_at, job.started_at) : "–"],
    ["ran", job.started_at ? seconds(job.started_at, job.finished_at) : "–"],
    ["attempts", job.attempts], ["worker", job.worker || "–"],
  ];
  if (job.progress) fields.push(["progress", JSON.stringify(job.progress)]);
  $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
  const outcome = "result" in job ? ["Result", job.result] : job.error ? ["Error", job.error] : ["", null];
  $("detail-outcome-title").textContent = outcome[0];
  $("detail-outcome").textContent = outcome[1] === null ? "" : JSON.stringify(outcome[1], null, 2);
  $("detail-outcome").hidden = outcome[1] === null;
}

// --- gateways and the queue ----------------------------------------------------------------

function showGateways(gateways) {
  const rows = gateways.map((g) => {
    const row = el("tr");
    row.dataset.gatewayId = g.id;
    const status = el("td", "status");
    status.append(badge(g.status));
    // The circuit breaker: a failing backend's calls are refused until it recovers.
    if (g.breaker && g.breaker.status !== "closed") {
      const circuit = badge(g.breaker.status === "open" ? "circuit-open" : "circuit-half-open");
      circuit.title = `${g.breaker.failures} transport failures in a row`;
      status.append(" ", circuit);
    }
    const server = g.server_name ? `${g.server_name} ${g.server_version || ""}`.trim() : "–";
    row.append(
      el("td", null, g.name), status, el("td", null, g.transport),
      el("td", "num", g.tool_count), el("td", null, server), el("td", "time", clock(g.refreshed_at)),
    );
    return row;
  });
  $("gateways").querySelector("tbody").replaceChildren(...rows);
  $("gateways-empty").hidden = rows.length > 0;
}

function showQueue(queue) {
  $("queue-depth").textContent = queue.depth;
  $("queue-running").textContent = queue.running;
  $("queue").hidden = false;
}

// --- the poll --------------------------------------------------------------------------------

function notify(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
}

async function jobsOrWhy(query) {
  try {
    return (await api("GET", `/v1/jobs?${query}`)).items;
  } catch (error) {
    if (error.status === 403) {
      notify("This token may not see jobs (viewers see the catalog only).");
      return [];
    }
    throw error;
  }
}

async function poll() {
  clearTimeout(state.timer);
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  if (!document.hidden) {
    try {
      const readGateways = state.polls % GATEWAY_POLLS === 0;
      const [queue, active, recent, gateways] = await Promise.all([
        api("GET", "/v1/queue"),
        jobsOrWhy(`status=queued&status=running&limit=${JOBS_SHOWN}`),
        jobsOrWhy(`limit=${JOBS_SHOWN}`),
        readGateways ? api("GET", "/v1/gateways") : null,
      ]);
      showQueue(queue);
      showJobs("active-jobs", active);
      showJobs("recent-jobs", recent);
      if (gateways) showGateways(gateways.items);
      if (state.selected) await showDetail();
      state.polls += 1;
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (error.status !== 401) notify(`Could not read the API: ${error.message}`);
    }
  }
  if (sessionStorage.getItem(TOKEN_KEY)) state.timer = setTimeout(poll, POLL_MS);
}

// --- the token -------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  $("console").hidden = true;
  $("queue").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  notify(message || "");
  $("token").focus();
}

function openConsole() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  notify("");
  state.polls = 0;
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    openConsole();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("detail-close").addEventListener("click", () => select(null));
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  if (sessionStorage.getItem(TOKEN_KEY)) openConsole();
  else signOut();
});
