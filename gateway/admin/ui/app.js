// The ops dashboard: asks for the admin token, keeps it in this tab's sessionStorage (never
// in a URL, never sent anywhere but the Authorization header of this gateway's admin API),
// and redraws every few seconds from the API.

import { COLOURS, refusalChart, swatch } from "./chart.js";

const KEY = "gateway-admin-token";
const REFRESH_MS = 5000;
const SHOWN_SERIES = COLOURS.length - 1; // the rest are added up as "other"
let timer = null;

class Unauthorized extends Error {}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

function table(headings, rows, numeric = []) {
  const head = el("tr", {}, ...headings.map((h, i) =>
    el("th", numeric.includes(i) ? { class: "number", scope: "col" } : { scope: "col" }, h)));
  const body = rows.map((row) => el("tr", {}, ...row.map((cell, i) =>
    el("td", numeric.includes(i) ? { class: "number" } : {}, cell))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function fill(selector, ...children) {
  document.querySelector(selector).replaceChildren(...children);
}

function facts(selector, pairs) {
  fill(selector, ...pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

const number = new Intl.NumberFormat("en");
const fmt = (n) => (n === null || n === undefined ? "–" : number.format(n));

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) {
    return "until cleared";
  }
  const s = Math.max(0, Math.round(seconds));
  const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
  if (d) return `${d}d ${h}h left`;
  if (h) return `${h}h ${m}m left`;
  if (m) return `${m}m ${s % 60}s left`;
  return `${s}s left`;
}

async function api(path, token) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
    referrerPolicy: "no-referrer",
  });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new Unauthorized(body?.error?.message || `The gateway answered ${response.status}.`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(body?.error?.message || `${path} answered ${response.status}.`);
  }
  return body;
}

function showPolicies(p) {
  const last = p.last_reload;
  const outcome = last
    ? el("span", { class: last.outcome === "failed" ? "bad" : "ok" },
      `${last.outcome} at ${when(last.checked_at)}`)
    : "not reloading (given in code)";
  facts("#policies .facts", [
    ["Version", p.version],
    ["Loaded at", when(p.loaded_at)],
    ["Last reload", outcome],
    ["Policies", p.policies.map((x) => `${x.name} (${x.scope}, ${x.mode})`).join(", ") || "none"],
  ]);
  fill("#policies .problems", ...(last?.problems || []).map((line) => el("li", {}, line)));
}

function showStorage(ready) {
  const up = ready.storage === "up";
  facts("#storage .facts", [
    ["State", el("span", { class: up ? "ok" : "bad" }, ready.storage ?? "starting")],
    ["Backlog", fmt(ready.storage_backlog)],
    ["Overrides version", fmt(ready.overrides_version)],
  ]);
}

function limitsText(limits) {
  return Object.entries(limits).map(([metric, list]) => `${metric} ${list.join(", ")}`).join("; ");
}

function showOverrides(body) {
  const rows = body.overrides.map((o) => [
    `${o.scope} ${o.id}`, limitsText(o.limits), duration(o.seconds_left), o.set_by, o.reason,
  ]);
  fill("#overrides .content", rows.length
    ? table(["Who", "Limits", "Time left", "Set by", "Reason"], rows)
    : el("p", { class: "empty" }, "No live override."));
}

// The day limit closest to running out, enforced ones first (a shadow limit refuses nobody).
function tightest(limits) {
  if (!limits || !limits.length) {
    return null;
  }
  const share = (l) => l.remaining / Math.max(1, l.amount);
  const enforced = limits.filter((l) => l.mode !== "shadow");
  return (enforced.length ? enforced : limits).reduce((a, b) => (share(b) < share(a) ? b : a));
}

function spenderTable(title, rows) {
  const body = rows.map((r) => {
    const t = tightest(r.limits);
    const remaining = r.limits === null ? "storage down" : t ? `${fmt(t.remaining)} of ${t.limit}` : "no daily limit";
    return [r.id, fmt(r.tokens), t ? `${fmt(t.used)} ${t.metric}` : "–", remaining, t ? t.policy : ""];
  });
  return el("div", {}, el("h3", {}, title), body.length
    ? table(["Id", "Tokens seen here", "Used today", "Remaining", "Policy"], body, [1, 2])
    : el("p", { class: "empty" }, "No spend seen today."));
}

function showSpenders(body) {
  const s = body.scopes;
  fill("#spenders .content",
    spenderTable("Accounts", s.account),
    spenderTable("Organizations", s.organization),
    spenderTable("Linked clusters", s.cluster));
}

function showRefusals(body) {
  const named = body.series.slice(0, SHOWN_SERIES).map((s, i) => ({
    label: s.policy ? `${s.policy} (${s.reason})` : s.reason,
    total: s.total,
    perMinute: s.per_minute,
    colour: COLOURS[i],
  }));
  const rest = body.series.slice(SHOWN_SERIES);
  if (rest.length) {
    const perMinute = new Array(body.minutes).fill(0);
    rest.forEach((s) => s.per_minute.forEach((c, i) => { perMinute[i] += c; }));
    const total = rest.reduce((sum, s) => sum + s.total, 0);
    named.push({ label: "other", total, perMinute, colour: COLOURS[SHOWN_SERIES] });
  }
  fill("#refusals .chart", refusalChart(named, body.minutes));
  fill("#refusals .legend", ...(named.length
    ? named.map((s) => el("li", {}, swatch(s.colour), `${s.label}: ${fmt(s.total)}`))
    : [el("li", { class: "empty" }, "No refusal in the last hour.")]));
}

function showShadow(body) {
  const perPolicy = body.policies.map((p) => [p.policy, p.scope, fmt(p.refusals), fmt(p.ids), when(p.last_seen)]);
  const top = body.top.map((t) => [t.policy, `${t.scope} ${t.id}`, fmt(t.refusals), fmt(t.tokens)]);
  fill("#shadow .content",
    perPolicy.length
      ? table(["Policy", "Scope", "Would refuse", "Ids", "Last"], perPolicy, [2, 3])
      : el("p", { class: "empty" }, "No shadow policy is running."),
    ...(top.length ? [el("h3", {}, "Most refused ids"), table(["Policy", "Who", "Refusals", "Tokens"], top, [2, 3])] : []));
}

function showAudit(body) {
  const rows = body.entries.map((e) => [when(e.time), e.actor, e.action, e.target, e.reason, e.replica]);
  fill("#audit .content", rows.length
    ? table(["Time", "Actor", "Action", "Target", "Reason", "Replica"], rows)
    : el("p", { class: "empty" }, "No admin action recorded yet."));
}

async function readyz() {
  const response = await fetch("/readyz", { cache: "no-store" });
  return response.json();
}

async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token) {
    return signedOut("");
  }
  try {
    const [policies, ready, overrides, spenders, refusals, shadow, audit] = await Promise.all([
      api("/v1/policies", token), readyz(), api("/v1/overrides", token),
      api("/v1/spenders?limit=10", token), api("/v1/refusals", token),
      api("/v1/shadow?limit=10", token), api("/v1/audit?limit=15", token),
    ]);
    showPolicies(policies);
    showStorage(ready);
    showOverrides(overrides);
    showSpenders(spenders);
    showRefusals(refusals);
    showShadow(shadow);
    showAudit(audit);
    signedIn(`Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`);
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      return signedOut(error.message);
    }
    document.querySelector("#status").textContent = `Could not refresh: ${error.message}`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function signedIn(status) {
  document.querySelector("#login").hidden = true;
  document.querySelector("#dashboard").hidden = false;
  document.querySelector("#sign-out").hidden = false;
  document.querySelector("#status").textContent = status;
}

function signedOut(message) {
  clearTimeout(timer);
  document.querySelector("#dashboard").hidden = true;
  document.querySelector("#sign-out").hidden = true;
  document.querySelector("#login").hidden = false;
  document.querySelector("#status").textContent = "";
  document.querySelector("#login-error").textContent = message;
}

document.querySelector("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.querySelector("#token");
  sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  clearTimeout(timer);
  refresh();
});

document.querySelector("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  signedOut("Signed out.");
});

refresh();
