// ServOS web UI: first-admin setup, login, and a read-only overview. The token lives in
// sessionStorage only (gone when the tab closes); secrets are never displayed because
// the API never returns them.
"use strict";
const $ = (id) => document.getElementById(id);
const show = (id) => ["setup", "login", "dash"].forEach((s) => ($(s).hidden = s !== id));
const token = () => sessionStorage.getItem("servos_token");

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const r = await fetch("/api/v1" + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = r.status === 204 ? null : await r.json();
  if (!r.ok) throw new Error((data && data.error && data.error.message) || r.statusText);
  return data;
}

function table(el, rows, cols) {
  el.replaceChildren();
  const head = el.insertRow();
  cols.forEach((c) => { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
  rows.forEach((row) => {
    const tr = el.insertRow();
    cols.forEach((c) => {
      const td = tr.insertCell();
      const v = row[c];
      td.textContent = v === null || v === undefined ? "-" : Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v);
      if (c === "status") td.className = String(v);
    });
  });
}

async function dashboard() {
  show("dash");
  $("logout").hidden = false;
  $("who").textContent = sessionStorage.getItem("servos_user") || "";
  table($("servers"), await api("GET", "/servers"), ["name", "host", "status", "host_key_fingerprint", "status_reason"]);
  table($("services"), await api("GET", "/services"), ["name", "image", "servers", "port", "domains"]);
  table($("audit"), await api("GET", "/audit?limit=20"), ["seq", "at", "actor", "action", "object_type"]);
}

function remember(answer) {
  sessionStorage.setItem("servos_token", answer.token);
  sessionStorage.setItem("servos_user", answer.username);
}

function onSubmit(form, fn) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    $("error").textContent = "";
    try { await fn(Object.fromEntries(new FormData(form))); } catch (err) { $("error").textContent = err.message; }
  });
}

onSubmit($("setup-form"), async (f) => { remember(await api("POST", "/setup", f)); await dashboard(); });
onSubmit($("login-form"), async (f) => { remember(await api("POST", "/auth/login", f)); await dashboard(); });
$("show-setup").addEventListener("click", (e) => { e.preventDefault(); show("setup"); });
$("logout").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });

(token() ? dashboard() : Promise.reject()).catch(() => { sessionStorage.clear(); show("login"); });
