
"use strict";
(function () {
  const KEY = "tidemark-token";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // A token in the address (#token=...) is taken and removed from the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    localStorage.setItem(KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const time = (t) => (t ? new Date(t).toLocaleString() : "—");
  const badge = (word) => el("span", { class: "badge " + word }, word);

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.abs(seconds);
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function fill(table, rows, columns, emptyText) {
    const body = table.tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      body.append(el("tr", {}, el("td", { class: "empty", colspan: String(columns) }, emptyText)));
      return;
    }
    for (const row of rows) body.append(row);
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + localStorage.getItem(KEY) },
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const why = body && body.error ? body.error : response.statusText;
      throw new HttpError(response.status, why);
    }
    return body;
  }

  function showLogin(message) {
    document.body.dataset.state = "login";
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function renderSources(sources) {
    fill($("sources"), sources.map((s) => {
      const last = s.last_backup;
      return el("tr", { "data-source": s.name },
        el("td", {}, el("strong", {}, s.name), el("div", { class: "sub" }, "repository " + s.repository)),
        el("td", {}, s.kind),
        el("td", { class: "health" }, badge(s.health)),
        el("td", {}, last ? time(last.finished || last.started || last.created) : "never",
          last ? el("div", { class: "sub" }, last.status + (last.message ? ": " + last.message : "")) : null),
        el("td", {}, time(s.next_backup),
          el("div", { class: "sub mono" }, s.schedule + " " + s.timezone + (s.window ? ", window " + s.window : ""))),
        el("td", {}, time(s.next_drill)),
        el("td", {}, time(s.newest_snapshot)));
    }), 7, "No sources configured.");
  }

  function renderTimeline(sources, snapshots) {
    const box = $("timeline");
    box.replaceChildren();
    const now = Date.now();
    const points = snapshots.map((s) => ({ source: s.source || "(unknown)", t: Date.parse(s.time), snap: s }));
    if (points.length === 0) {
      box.append(el("p", { class: "sub" }, "No restorable points yet."));
      return;
    }
    const names = Array.from(new Set(sources.map((s) => s.name).concat(points.map((p) => p.source))));
    const start = Math.min(...points.map((p) => p.t));
    const span = Math.max(now - start, 60000);
    const width = 1000, left = 140, right = 20, row = 30, top = 10;
    const height = top + names.length * row + 30;
    const x = (t) => left + ((t - start) / span) * (width - left - right);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Restorable points per source" });
    names.forEach((name, i) => {
      const y = top + i * row + row / 2;
      chart.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: y, y2: y }));
      chart.append(svg("text", { class: "label", x: 0, y: y + 4 }, name));
      for (const p of points.filter((p) => p.source === name)) {
        const dot = svg("circle", { class: "point", cx: x(p.t).toFixed(1), cy: y, r: 5, "data-snapshot": p.snap.id });
        dot.append(svg("title", {}, `${name}: ${p.snap.id.slice(0, 8)} at ${time(p.snap.time)}`));
        chart.append(dot);
      }
    });
    const base = top + names.length * row + 14;
    for (let k = 0; k <= 4; k++) {
      const t = start + (span * k) / 4;
      chart.append(svg("text", { class: "tick", x: x(t), y: base, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" },
        new Date(t).toLocaleString()));
    }
    chart.append(svg("line", { class: "now", x1: x(now), x2: x(now), y1: top, y2: base - 12 }));
    box.append(chart);
  }

  function renderPolicy(rows) {
    fill($("policy"), rows.map((p) => el("tr", { "data-source": p.source },
      el("td", {}, el("strong", {}, p.source)),
      el("td", {}, p.method),
      el("td", {}, p.frequency),
      el("td", {}, p.retention),
      el("td", {}, time(p.oldest_restorable)),
      el("td", {}, p.recovery_precision),
      el("td", {}, age(p.newest_backup_age_seconds)),
      el("td", {}, p.offsite_lag_seconds.length === 0 ? "no off-site copy"
        : p.offsite_lag_seconds.map(([repo, lag]) => repo + ": " + (lag === null ? "never copied" : age(lag))).join(", ")),
      el("td", {}, p.last_drill ? (p.last_drill.ok ? "restored in " + age(p.last_drill.restore_seconds) : "FAILED")
        : "no drill yet"))), 9, "No sources configured.");
  }

  function renderDrills(drills, drillJobs) {
    const sourceOf = new Map(drillJobs.map((j) => [j.id, j.source]));
    fill($("drills"), drills.slice(0, 20).map((d) => el("tr", {},
      el("td", {}, time(d.time)),
      el("td", {}, sourceOf.get(d.job) || "—"),
      el("td", {}, badge(d.ok ? "succeeded" : "failed")),
      el("td", {}, age(d.restore_seconds)),
      el("td", { class: "mono" }, d.snapshot ? d.snapshot.slice(0, 12) : "—"),
      el("td", {}, d.message))), 6, "No drills yet.");
  }

  function renderFailures(jobs) {
    fill($("failures"), jobs.map((j) => el("tr", {},
      el("td", {}, time(j.finished || j.created)),
      el("td", {}, j.source),
      el("td", {}, j.kind, el("div", { class: "sub mono" }, j.id)),
      el("td", {}, badge(j.status)),
      el("td", {}, j.message || ""))), 5, "No failures.");
  }

  async function load() {
    if (!localStorage.getItem(KEY)) { showLogin(""); return; }
    try {
      const [sources, policy] = await Promise.all([api("/api/v1/sources"), api("/api/v1/policy")]);
      const [snapshots, drills, drillJobs, failures] = await Promise.all([
        api("/api/v1/snapshots"),
        api("/api/v1/drills"),
        api("/api/v1/jobs?kind=drill&limit=200"),
        api("/api/v1/jobs?status=failed,missed,interrupted&limit=20"),
      ]);
      renderSources(sources);
      renderTimeline(sources, snapshots);
      renderPolicy(policy);
      renderDrills(drills, drillJobs);
      renderFailures(failures);
      $("load-error").textContent = "";
      $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.state = "dashboard";
    } catch (e) {
      if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
        showLogin("The server refused this token: " + e.message);
      } else {
        document.body.dataset.state = "error";
        $("load-error").textContent = "Could not load the dashboard: " + e.message;
      }
    }
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    localStorage.setItem(KEY, token);
    $("token").value = "";
    load();
  });
  $("signout").addEventListener("click", () => { localStorage.removeItem(KEY); showLogin("Signed out."); });
  $("refresh").addEventListener("click", load);
  setInterval(() => { if (document.body.dataset.state !== "login") load(); }, 30000);
  load();
})();
