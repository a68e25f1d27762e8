// Mission Control: live updates and controls. Every value from the server becomes text
// (textContent, createElement); nothing is parsed as markup.
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function live(url, handlers) {
  const mark = document.getElementById("live");
  const source = new EventSource(url);
  source.onopen = () => { if (mark) { mark.textContent = "live"; mark.classList.add("on"); } };
  source.onerror = () => { if (mark) { mark.textContent = "reconnecting"; mark.classList.remove("on"); } };
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  }
  // The server ends a job's stream when the job has ended: nothing more will come.
  source.addEventListener("end", () => {
    source.close();
    if (mark) { mark.textContent = "ended"; mark.classList.remove("on"); }
  });
  return source;
}

// ---- jobs list ----
function jobRow(row) {
  const tr = el("tr");
  tr.dataset.id = row.id;
  tr.dataset.activity = row.activity;
  const name = el("td", "name");
  const link = el("a", null, row.name);
  link.href = "/jobs/" + encodeURIComponent(row.id);
  name.append(link, el("br"), el("small", "id", row.id));
  const state = el("td", "state");
  state.append(el("span", "badge " + row.activity, row.state + (row.paused ? " · paused" : "")));
  const reason = el("td", "reason", row.reason);
  reason.title = row.detail;
  tr.append(name, state, reason, el("td", "group", row.group), el("td", "age", row.age),
    el("td", "duration", row.duration), el("td", "num turns", row.turns),
    el("td", "num tokens", row.tokens), el("td", "num cost", row.cost));
  return tr;
}

function showTotals(t) {
  document.getElementById("total-jobs").textContent = String(t.jobs);
  document.getElementById("total-tokens").textContent = String(t.tokens);
  document.getElementById("total-cost").textContent = String(t.cost);
  for (const box of document.querySelectorAll("#totals [data-activity]")) {
    box.querySelector(".count").textContent = String(t.counts[box.dataset.activity] || 0);
  }
}

function jobsPage() {
  const table = document.getElementById("jobs");
  const f = table.dataset;
  // The server sums the totals under the same filter as the page (every matching job, not only
  // the rows shown).
  const query = new URLSearchParams({ state: f.filterState || "", group: f.filterGroup || "",
    name: f.filterName || "" });
  live("/live/jobs?" + query.toString(), {
    job: (row) => {
      const keep = (!f.filterState || row.state === f.filterState)
        && (!f.filterGroup || row.group === f.filterGroup)
        && (!f.filterName || row.name.includes(f.filterName));
      const old = Array.from(table.tBodies[0].rows).find((tr) => tr.dataset.id === row.id);
      if (!keep) { if (old) old.remove(); return; }
      const fresh = jobRow(row);
      if (old) old.replaceWith(fresh); else table.tBodies[0].prepend(fresh);
      const none = document.getElementById("no-jobs");
      if (none) none.remove();
    },
    totals: showTotals,
  });
}

// ---- one job ----
function turnItem(ev) {
  const li = el("li", "turn");
  li.dataset.action = ev.action;
  const head = el("div", "turnhead");
  head.append(el("span", "num", "turn " + ev.turn + "/" + ev.max_turns),
    el("span", "action " + ev.action, ev.action),
    el("span", "at", "attempt " + ev.attempt + " · " + ev.at));
  li.append(head);
  if (ev.progress) li.append(el("p", "progress", ev.progress));
  if (ev.argument) li.append(el("p", "argument", ev.argument));
  if (ev.thought) li.append(el("p", "thought", ev.thought));
  if (ev.ended) li.append(el("p", "ended", "→ " + ev.ended));
  const tokens = (ev.prompt_tokens || 0) + (ev.completion_tokens || 0);
  let meta = tokens + " tokens · $" + (ev.cost_usd || 0).toFixed(4) + " · " +
    (ev.files_changed || 0) + " files changed · " + (ev.commits || 0) + " commits";
  if (ev.edits && ev.edits.length) meta += " · edited: " + ev.edits.join(", ");
  li.append(el("p", "meta", meta));
  return li;
}

// A message a person sent, on the timeline (typed into Aider, or dropped: its attempt ended).
function messageItem(ev) {
  const li = el("li", "message");
  const dropped = ev.type === "message_dropped";
  li.dataset.dropped = String(dropped);
  const head = el("div", "turnhead");
  head.append(el("span", "num", dropped ? "message dropped" : "message"),
    el("span", "at", "attempt " + ev.attempt + " · " + ev.at));
  li.append(head, el("p", "said", ev.text));
  return li;
}

function timelineAdd(item) {
  const none = document.getElementById("no-turns");
  if (none) none.remove();
  document.getElementById("timeline").append(item);
}

const ACTIVITY = { queued: "waiting", starting: "waiting", running: "working",
  succeeded: "done", failed: "failed", cancelled: "cancelled" };

function describe(ev) {
  switch (ev.type) {
    case "state": return ev.state + (ev.reason ? " (" + ev.reason + ")" : "") + (ev.detail ? ": " + ev.detail : "");
    case "message": return "message: " + ev.text;
    case "message_dropped": return "message dropped: " + ev.text;
    case "verify": return "verify " + (ev.passed ? "passed" : "failed") + " (exit " + ev.exit_code + ")";
    case "waiting": return "waiting for the provider until " + ev.until + " (HTTP " + ev.status + " to " + ev.role + " call, retry " + ev.retry + ")";
    default: return JSON.stringify(ev);
  }
}

function jobPage() {
  const job = document.getElementById("job");
  const id = job.dataset.id;
  const url = "/live/jobs/" + encodeURIComponent(id) + "?seq=" + encodeURIComponent(job.dataset.seq) +
    "&transcript=" + encodeURIComponent(job.dataset.transcript);
  live(url, {
    event: (ev) => {
      if (ev.type === "turn") {
        timelineAdd(turnItem(ev));
        return;
      }
      if (ev.type === "message" || ev.type === "message_dropped") timelineAdd(messageItem(ev));
      if (ev.type === "state" && ACTIVITY[ev.state] !== undefined) {
        const holder = document.getElementById("job-state");
        const badge = el("span", "badge " + ACTIVITY[ev.state], ev.state);
        badge.dataset.state = ev.state;
        holder.replaceChildren(badge);
        document.getElementById("job-reason").textContent = ev.reason || "";
        const ended = ["succeeded", "failed", "cancelled"].includes(ev.state);
        // A starting attempt's detail is its container; the job's detail is its outcome.
        if (ended || ev.state === "queued") document.getElementById("job-detail").textContent = ev.detail || "";
        const started = document.getElementById("job-started");
        if (ev.state === "running" && !started.textContent) started.textContent = ev.at;
        if (ended) document.getElementById("job-finished").textContent = ev.at;
        for (const c of document.querySelectorAll("#controls button, #controls input")) c.disabled = ended;
      }
      const li = el("li");
      li.append(el("span", "at", ev.at), " ", el("span", "kind " + ev.type, ev.type), " ",
        el("span", "what", describe(ev)));
      document.getElementById("events").append(li);
    },
    transcript: (line) => {
      const span = el("span", "line " + line.direction, line.text + "\n");
      span.title = "attempt " + line.attempt + " · " + line.at;
      const pre = document.getElementById("transcript");
      pre.append(span);
      pre.scrollTop = pre.scrollHeight;
    },
  });

  const status = document.getElementById("control-status");
  async function post(action, body) {
    status.className = "status";
    status.textContent = action + "…";
    try {
      const res = await fetch("/api/v1/jobs/" + encodeURIComponent(id) + "/" + action, {
        method: "POST", credentials: "same-origin",
        headers: body ? { "Content-Type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      let message = text;
      try { const j = JSON.parse(text); message = j.error || j.message || j.result || action + " done"; } catch (_) {}
      if (!res.ok) status.className = "status error";
      status.textContent = res.ok ? (typeof message === "string" ? message : action + " done") : String(message);
      return res.ok;
    } catch (e) {
      status.className = "status error";
      status.textContent = String(e);
      return false;
    }
  }
  for (const button of document.querySelectorAll("#controls button[data-action]")) {
    button.addEventListener("click", () => {
      const action = button.dataset.action;
      if (action === "cancel" && !window.confirm("Cancel this job? Its work in progress is lost.")) return;
      post(action);
    });
  }
  document.getElementById("send-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("send-text");
    if (!input.value.trim()) return;
    if (await post("send", { message: input.value })) input.value = "";
  });
}

// ---- new job ----
function errorText(item) {
  if (typeof item === "string") return item;
  if (item && item.message) {
    const where = item.line ? item.line + ":" + (item.col || item.column || 1) + ": " : "";
    return where + item.message;
  }
  return JSON.stringify(item);
}

// Selects line `n` (1-based) of a textarea, so a located error points at its text.
function selectLine(area, n) {
  const lines = area.value.split("\n");
  let start = 0;
  for (let i = 0; i < n - 1 && i < lines.length; i++) start += lines[i].length + 1;
  const end = start + (lines[n - 1] || "").length;
  area.focus();
  area.setSelectionRange(start, end);
}

// A YAML double-quoted scalar holding exactly `value`: a JSON string is one, once the
// characters YAML reads as line breaks (NEL, U+2028, U+2029) or refuses unescaped (DEL, C1
// controls, BOM, U+FFFE/U+FFFF) are escaped too. Whatever a person types stays a string.
function yamlString(value) {
  return JSON.stringify(String(value)).replace(/[\u007f-\u009f\u2028\u2029\ufeff\ufffe\uffff]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

// A number as typed, bare when it is one (the server checks its range), else quoted so the
// server's located error names the field.
function yamlNumber(value) {
  return /^[0-9]+(\.[0-9]+)?$/.test(value) ? value : yamlString(value);
}

// The job file the short form describes: an agent job, every value quoted.
function shortFormYaml(form) {
  const v = (name) => form.elements[name].value.trim();
  const lines = ["# Written by the short form: edit it here, or change the form to rewrite it.",
    "name: " + yamlString(v("name")),
    "task: " + yamlString(form.elements.task.value.replace(/\s+$/, ""))];
  if (v("repo")) lines.push("repo: " + yamlString(v("repo")));
  if (v("model")) lines.push("agent: { model: " + yamlString(v("model")) + " }");
  if (v("manager")) lines.push("manager: { model: " + yamlString(v("manager")) + " }");
  const budget = [];
  if (v("tokens")) budget.push("tokens: " + yamlNumber(v("tokens")));
  if (v("usd")) budget.push("usd: " + yamlNumber(v("usd")));
  if (budget.length) lines.push("budget: { " + budget.join(", ") + " }");
  if (v("verify")) lines.push("verify: " + yamlString(v("verify")));
  return lines.join("\n") + "\n";
}

function newPage() {
  const text = document.getElementById("new-text");
  const errors = document.getElementById("new-errors");
  const short = document.getElementById("short-form");
  short.addEventListener("input", () => {
    text.value = shortFormYaml(short);
    errors.replaceChildren();
  });
  // Enter in a field submits the job file the form wrote.
  short.addEventListener("submit", (e) => {
    e.preventDefault();
    text.value = shortFormYaml(short);
    document.getElementById("new-form").requestSubmit();
  });
  document.getElementById("new-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) text.value = await file.text();
  });
  document.getElementById("new-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    errors.replaceChildren();
    let res, body;
    try {
      res = await fetch("/api/v1/jobs", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/yaml" }, body: text.value });
      const raw = await res.text();
      try { body = JSON.parse(raw); } catch (_) { body = { error: raw }; }
    } catch (err) {
      errors.append(el("li", null, String(err)));
      return;
    }
    if (res.ok) {
      const job = Array.isArray(body) ? body[0] : body;
      window.location.assign("/jobs/" + encodeURIComponent(job.id));
      return;
    }
    // The API's 422: {"error": "N problems ...", "problems": [{line, column, message, text}]}.
    errors.append(el("li", "summary", body.error || ("HTTP " + res.status)));
    for (const item of (body.problems || [])) {
      const li = el("li", "problem", errorText(item));
      if (item.line) {
        li.title = "show line " + item.line;
        li.addEventListener("click", () => selectLine(text, item.line));
      }
      errors.append(li);
    }
    const first = (body.problems || []).find((p) => p.line);
    if (first) selectLine(text, first.line);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "jobs") jobsPage();
  else if (page === "job") jobPage();
  else if (page === "new") newPage();
});
