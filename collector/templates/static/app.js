// dozor web UI: live updates of the overview (server-sent events), sorting and filtering of
// tables, and the forms that call the JSON API with the session's CSRF token. No libraries.
"use strict";

function sortTable(th, dir) {
  const table = th.closest("table");
  const idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  const num = th.dataset.sort === "num";
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = (r) => {
    const c = r.cells[idx];
    const v = c ? (c.dataset.v !== undefined ? c.dataset.v : c.textContent) : "";
    return num ? (parseFloat(v) || 0) : v.toLowerCase();
  };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const r = num ? x - y : x.localeCompare(y, "ru");
    return dir === "ascending" ? r : -r;
  });
  rows.forEach((r) => body.appendChild(r));
  th.parentNode.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", dir);
  table.dataset.sortIdx = idx;
  table.dataset.sortDir = dir;
}

function initSorting(root) {
  root.querySelectorAll("table.sortable th[data-sort]").forEach((th) => {
    th.tabIndex = 0;
    const go = () => sortTable(th, th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending");
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
  });
}

// The МО table is filtered as one types; a submitted host search leaves it whole.
let typed = false;

function applyFilter() {
  const q = document.getElementById("q");
  const t = document.getElementById("mo-table");
  if (!q || !t || !typed) return;
  const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
  Array.from(t.tBodies[0].rows).forEach((r) => {
    const hay = r.dataset.search || "";
    r.hidden = words.length > 0 && !words.every((w) => hay.includes(w));
  });
}

function initLive() {
  const live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  const state = document.getElementById("live-state");
  const es = new EventSource(live.dataset.live);
  es.addEventListener("overview", (ev) => {
    const d = JSON.parse(ev.data);
    const old = document.getElementById("mo-table");
    const sortIdx = old && old.dataset.sortIdx, sortDir = old && old.dataset.sortDir;
    live.innerHTML = d.html;
    initSorting(live);
    const t = document.getElementById("mo-table");
    if (t && sortIdx !== undefined && sortIdx !== null && sortIdx !== "") {
      const th = t.tHead.rows[0].cells[sortIdx];
      if (th) sortTable(th, sortDir);
    }
    applyFilter();
    document.getElementById("updated").textContent = d.updated;
    if (state) state.textContent = "";
  });
  es.onerror = () => { if (state) state.textContent = "(нет связи с сервером, повтор…)"; };
}

async function csrf() {
  let t = sessionStorage.getItem("dozor_csrf");
  if (t) return t;
  const r = await fetch("/api/v1/session");
  if (!r.ok) return "";
  const s = await r.json();
  if (s.csrf_token) sessionStorage.setItem("dozor_csrf", s.csrf_token);
  return s.csrf_token || "";
}

async function callApi(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": await csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, data };
}

function initForms() {
  document.querySelectorAll("form.api").forEach((f) => {
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = f.querySelector(".result");
      const body = {};
      f.querySelectorAll("input[name], select[name]").forEach((i) => {
        if (f.dataset.kind === "planned") {
          // Only what was filled in; local date-times as RFC 3339, days as a list.
          const val = i.value.trim();
          if (val === "") return;
          if (i.type === "datetime-local") body[i.name] = new Date(val).toISOString();
          else if (i.name === "days") body.days = val.split(/[ ,;]+/).filter((d) => d);
          else body[i.name] = val;
          return;
        }
        body[i.name] = i.name === "duration_secs" ? parseInt(i.value, 10) : i.value;
      });
      if (f.dataset.kind === "planned" && !body.days) delete body.tz;
      if (f.dataset.method === "DELETE" && !confirm("Удалить плановые работы?")) return;
      const btn = f.querySelector("button");
      btn.disabled = true;
      const r = await callApi(f.dataset.method, f.dataset.api, f.dataset.method === "DELETE" ? undefined : body);
      btn.disabled = false;
      if (r.ok && f.dataset.kind && f.dataset.kind.startsWith("planned")) {
        out.textContent = f.dataset.kind === "planned" ? "Плановые работы объявлены." : "Удалено.";
        out.className = "result ok-note";
        setTimeout(() => location.reload(), 800);
      } else if (r.ok) {
        out.textContent = f.dataset.kind === "ack" ? "Инцидент принят в работу." : "Тишина включена до " +
          new Date(r.data.ends_ms).toLocaleString("ru-RU") + ".";
        out.className = "result ok-note";
        if (f.dataset.kind === "ack") setTimeout(() => location.reload(), 800);
      } else if (r.status === 404 && f.dataset.kind === "ack") {
        out.textContent = "Подтверждение инцидентов ещё не поддерживается этим сервером.";
        out.className = "result error";
      } else {
        out.textContent = r.data.message || ("Ошибка " + r.status);
        out.className = "result error";
      }
    });
  });
  const lo = document.getElementById("logout");
  if (lo) lo.addEventListener("click", async () => {
    await callApi("POST", "/api/v1/logout");
    sessionStorage.removeItem("dozor_csrf");
    location.href = "/login";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initSorting(document);
  initForms();
  const q = document.getElementById("q");
  if (q) q.addEventListener("input", () => { typed = true; applyFilter(); });
  initLive();
});
