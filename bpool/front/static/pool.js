// The pool page: polls /pool/data and redraws the table in place (no reload, no framework).
// Everything from the server goes into the page as text, never as HTML: a last error can
// quote whatever the site showed.
"use strict";

const POLL_MS = 2000;
const KEY_STORE = "bpool.apiKey";
const COLUMNS = ["profile", "state", "cool-downs", "jobs", "last answer", "cookies expire",
                 "last error"];
const WEEK_S = 7 * 86400;

let last = null;        // the last good reply
let fetchedAt = 0;      // Date.now() when it arrived: countdowns run on from there
const seen = new Set(); // profiles seen since the page opened: a vanished one shows as gone
const shots = new Map(); // "profile/snapshot" -> object URL of a snapshot the user opened

const $ = (id) => document.getElementById(id);

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function cell(label, ...children) {
  const td = el("td");
  td.dataset.label = label;
  const v = el("div", null, "v");
  for (const c of children) v.append(c);
  td.append(v);
  return td;
}

function coolDowns(w, elapsed) {
  const ul = el("ul", null, "cool");
  if (w.cooldown_remaining_s !== null && w.cooldown_remaining_s !== undefined) {
    ul.append(el("li", `whole account ${duration(w.cooldown_remaining_s - elapsed)} left`));
  }
  for (const [model, left] of Object.entries(w.cooling || {})) {
    if (left - elapsed > 0) ul.append(el("li", `${model} ${duration(left - elapsed)} left`));
  }
  return ul.childElementCount ? ul : document.createTextNode("–");
}

function cookieCell(w, elapsed) {
  if (w.cookie_expires_in_s === null || w.cookie_expires_in_s === undefined) {
    return el("span", "unknown", "muted");
  }
  const left = w.cookie_expires_in_s - elapsed;
  const when = new Date(w.cookie_expires_at * 1000).toISOString().slice(0, 10);
  const span = el("span", left <= 0 ? `expired (${when})` : `in ${duration(left)} (${when})`);
  if (left < WEEK_S) span.className = "soon";
  return span;
}

function row(w, elapsed) {
  const tr = el("tr");
  tr.dataset.profile = w.profile_id;
  const who = [el("strong", w.profile_id)];
  if (w.account) who.push(el("span", w.account, "account"));
  const since = w.state === "gone" ? null : el("span", `for ${duration(w.since_s + elapsed)}`, "since");
  tr.append(
    cell(COLUMNS[0], ...who),
    cell(COLUMNS[1], el("span", w.state, `state state-${w.state}`), ...(since ? [since] : [])),
    cell(COLUMNS[2], w.state === "gone" ? "–" : coolDowns(w, elapsed)),
    cell(COLUMNS[3], String(w.jobs_served ?? "–")),
    cell(COLUMNS[4], w.last_answer_s === null || w.last_answer_s === undefined
      ? "never" : `${duration(w.last_answer_s + elapsed)} ago`),
    cell(COLUMNS[5], w.state === "gone" ? "–" : cookieCell(w, elapsed)),
  );
  const err = cell(COLUMNS[6], w.last_error || "–");
  err.className = "error";
  if (w.snapshot) err.firstChild.append(snapshotControl(w.profile_id, w.snapshot));
  tr.append(err);
  tr.querySelector("td:nth-child(2)").classList.add("state-cell");
  tr.querySelector("td:nth-child(3)").classList.add("cooldowns");
  return tr;
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The newest page snapshot of a profile, fetched with the key (an <img> could not send it).
function snapshotControl(profile, name) {
  const box = el("div", null, "snapshot");
  const url = shots.get(`${profile}/${name}`);
  if (url) {
    const img = el("img");
    img.src = url;
    img.alt = `snapshot ${name}`;
    box.append(img);
    return box;
  }
  const button = el("button", `show snapshot ${name}`);
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    const resp = await fetch(`/pool/snapshot/${encodeURIComponent(profile)}`,
                             { headers: authHeaders(), cache: "no-store" });
    if (!resp.ok) {
      button.textContent = `snapshot unavailable (${resp.status})`;
      return;
    }
    shots.set(`${profile}/${name}`, URL.createObjectURL(await resp.blob()));
    render();
  });
  box.append(button);
  return box;
}

function render() {
  if (!last) return;
  const elapsed = (Date.now() - fetchedAt) / 1000;
  $("serving").textContent = `${last.serving} of ${last.workers.length}`;
  $("queue").textContent = String(last.queue_length);
  $("rate").textContent = last.requests_per_min === null ? "–" : String(last.requests_per_min);
  $("inflight").textContent = String(last.front.in_flight);
  const present = new Set(last.workers.map((w) => w.profile_id));
  const all = [...last.workers];
  for (const p of seen) {
    if (!present.has(p)) all.push({ profile_id: p, state: "gone", since_s: 0 });
  }
  all.sort((a, b) => a.profile_id.localeCompare(b.profile_id));
  $("rows").replaceChildren(...all.map((w) => row(w, elapsed)));
  $("empty").hidden = all.length > 0;
  const age = Math.round(elapsed);
  $("updated").textContent = `updated ${age < 2 ? "just now" : `${age}s ago`}`;
}

function problem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

async function poll() {
  const key = localStorage.getItem(KEY_STORE);
  try {
    const resp = await fetch("/pool/data", { headers: authHeaders(), cache: "no-store" });
    if (resp.status === 401) {
      $("keyform").hidden = false;
      problem(key ? "That API key was refused." : "This pool needs an API key to show its state.");
      return;
    }
    const body = await resp.json();
    if (!body.ok) {
      problem(`The front cannot reach the broker: ${body.error?.message ?? resp.status}`);
      return;
    }
    $("keyform").hidden = true;
    $("forget").hidden = !key;
    problem("");
    for (const w of body.workers) seen.add(w.profile_id);
    last = body;
    fetchedAt = Date.now();
    render();
  } catch (e) {
    problem("The front does not answer (stopped or restarting?).");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key);
    $("key").value = "";
    problem("");
  });
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("forget").hidden = true;
  });
  setInterval(render, 1000);  // countdowns and "updated" between polls
  poll();
});
