// steady's live dashboard: polls the admin JSON API every second and draws plain SVG.
// No dependencies, no build step; everything it needs is served by the admin listener.
//
// Reads:
//   GET /api/routes                      routes[].{name, upstream, requests{1xx..5xx},
//                                        failures{reason: n}, latency{p50, p99, ...} (s)}
//   GET /api/routes/{name}/latency?window=5m
//                                        {window_seconds, count, percentiles[{percentile, seconds}]}
//   GET /api/upstreams                   upstreams[].endpoints[]
//   GET /api/events                      events[] (newest first)
// Any of them may be missing (404) or fail: that panel shows "no data".
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72"];

  // route name -> [{t, total, errors, rate, errRatio, p50, p99}] (oldest first)
  const history = new Map();
  let polls = 0;

  const $ = (id) => document.getElementById(id);

  async function getJson(path) {
    try {
      const res = await fetch(path, { cache: "no-store" });
      if (!res.ok) return null;
      return await res.json();
    } catch (e) {
      return null;
    }
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function noData(tbody, cols, what) {
    tbody.replaceChildren();
    const tr = el("tr");
    tr.appendChild(el("td", { colspan: cols, class: "none" }, what || "no data"));
    tbody.appendChild(tr);
  }

  function fmtNum(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    return Number(n).toFixed(digits);
  }

  function fmtMs(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const ms = seconds * 1000;
    return ms < 10 ? ms.toFixed(2) + " ms" : ms.toFixed(1) + " ms";
  }

  function sumValues(obj) {
    let total = 0;
    for (const v of Object.values(obj || {})) if (typeof v === "number") total += v;
    return total;
  }

  // Safe as an element id: keeps letters, digits, '-', '_' and '.'.
  function idPart(s) {
    return String(s).replace(/[^A-Za-z0-9_.-]/g, "_");
  }

  // ---- routes: golden signals -------------------------------------------------------

  function recordRoutes(routes, now) {
    const seen = new Set();
    for (const r of routes) {
      seen.add(r.name);
      const total = sumValues(r.requests);
      const errors = (r.requests && r.requests["5xx"]) || 0;
      const lat = r.latency || {};
      let points = history.get(r.name);
      if (!points) {
        points = [];
        history.set(r.name, points);
      }
      const prev = points[points.length - 1];
      let rate = null;
      let errRatio = null;
      if (prev && now > prev.t && total >= prev.total) {
        const dt = (now - prev.t) / 1000;
        const dTotal = total - prev.total;
        rate = dTotal / dt;
        errRatio = dTotal > 0 ? (errors - prev.errors) / dTotal : 0;
      }
      points.push({
        t: now, total, errors, rate, errRatio,
        p50: typeof lat.p50 === "number" ? lat.p50 : null,
        p99: typeof lat.p99 === "number" ? lat.p99 : null,
      });
      while (points.length && points[0].t < now - HISTORY_MS) points.shift();
    }
    for (const name of Array.from(history.keys())) if (!seen.has(name)) history.delete(name);
  }

  function renderRoutes(routes) {
    const tbody = $("routes-body");
    if (!routes) {
      noData(tbody, 8);
      return;
    }
    if (routes.length === 0) {
      noData(tbody, 8, "no routes");
      return;
    }
    tbody.replaceChildren();
    for (const r of routes) {
      const id = "route-" + idPart(r.name);
      const points = history.get(r.name) || [];
      const last = points[points.length - 1] || {};
      const lat = r.latency || {};
      const tr = el("tr", { id });
      tr.appendChild(el("td", {}, r.name));
      tr.appendChild(el("td", {}, r.upstream || "–"));
      tr.appendChild(el("td", { id: id + "-total", class: "num" }, sumValues(r.requests)));
      tr.appendChild(el("td", { id: id + "-rps", class: "num" }, fmtNum(last.rate, 1)));
      const err = last.errRatio === null || last.errRatio === undefined ? null : last.errRatio * 100;
      tr.appendChild(el("td", { id: id + "-errors", class: "num" }, err === null ? "–" : fmtNum(err, 2) + " %"));
      tr.appendChild(el("td", { id: id + "-failures", class: "num" }, sumValues(r.failures)));
      tr.appendChild(el("td", { id: id + "-p50", class: "num" }, fmtMs(lat.p50)));
      tr.appendChild(el("td", { id: id + "-p99", class: "num" }, fmtMs(lat.p99)));
      tbody.appendChild(tr);
    }
  }

  // Draws series of [t, value] over the last HISTORY_MS into an SVG line chart.
  function lineChart(svg, series, unit) {
    const W = 400, H = 160, L = 40, R = 6, T = 8, B = 18;
    svg.replaceChildren();
    const now = Date.now();
    let max = 0;
    for (const s of series) for (const [, v] of s.points) if (v > max) max = v;
    const any = series.some((s) => s.points.length > 0);
    if (!any) {
      svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"));
      return;
    }
    if (max <= 0) max = 1;
    const x = (t) => L + ((t - (now - HISTORY_MS)) / HISTORY_MS) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      const v = max * f;
      svg.appendChild(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.appendChild(svgEl("text", { x: L - 3, y: y(v) + 3, "text-anchor": "end" }, fmtNum(v, v < 10 ? 2 : 0)));
    }
    svg.appendChild(svgEl("text", { x: L, y: H - 4 }, "-5m"));
    svg.appendChild(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end" }, "now" + (unit ? " (" + unit + ")" : "")));
    series.forEach((s, i) => {
      if (s.points.length === 0) return;
      const d = s.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
      const line = svgEl("polyline", { class: "series", points: d, stroke: s.color || COLORS[i % COLORS.length] });
      line.appendChild(svgEl("title", {}, s.name));
      svg.appendChild(line);
      svg.appendChild(svgEl("text", { x: L + 4 + i * 70, y: T + 10, fill: s.color || COLORS[i % COLORS.length] }, s.name));
    });
  }

  function renderCharts() {
    const rate = [], errors = [], latency = [];
    let i = 0;
    for (const [name, points] of history) {
      const color = COLORS[i++ % COLORS.length];
      const pick = (f) => points.filter((p) => f(p) !== null && f(p) !== undefined).map((p) => [p.t, f(p)]);
      rate.push({ name, color, points: pick((p) => p.rate) });
      errors.push({ name, color, points: pick((p) => (p.errRatio === null ? null : p.errRatio * 100)) });
      latency.push({ name: name + " p50", color, points: pick((p) => (p.p50 === null ? null : p.p50 * 1000)) });
      latency.push({ name: name + " p99", color: COLORS[i++ % COLORS.length], points: pick((p) => (p.p99 === null ? null : p.p99 * 1000)) });
    }
    lineChart($("chart-rate"), rate, "req/s");
    lineChart($("chart-errors"), errors, "%");
    lineChart($("chart-latency"), latency, "ms");
  }

  function renderRouteChoices(routes) {
    const select = $("percentile-route");
    const names = (routes || []).map((r) => r.name);
    const have = Array.from(select.options).map((o) => o.value);
    if (names.join("\n") === have.join("\n")) return;
    const current = select.value;
    select.replaceChildren();
    for (const n of names) select.appendChild(el("option", { value: n }, n));
    if (names.includes(current)) select.value = current;
  }

  // ---- percentile plot (HdrHistogram style) -----------------------------------------

  // Position of percentile p (0..100) on the log axis: log10(1 / (1 - p/100)).
  // 100% (the maximum) would be infinitely far: it is drawn at the right edge.
  function percentileX(p) {
    if (p >= 100) return Infinity;
    return Math.log10(1 / (1 - p / 100));
  }

  function renderPercentiles(data) {
    const svg = $("percentile-chart");
    const status = $("percentile-status");
    svg.replaceChildren();
    const points = data && Array.isArray(data.percentiles) ? data.percentiles : [];
    if (points.length === 0) {
      status.textContent = "no data";
      status.className = "none";
      svg.appendChild(svgEl("text", { x: 280, y: 130, "text-anchor": "middle" }, "no data"));
      return;
    }
    status.textContent = (data.route || "") + ": " + (data.count || 0) + " requests over " +
      fmtNum(data.window_seconds, 0) + " s";
    status.className = "";
    const W = 560, H = 260, L = 50, R = 10, T = 10, B = 28;
    let maxX = 0, maxY = 0;
    for (const p of points) {
      const px = percentileX(p.percentile);
      if (isFinite(px)) maxX = Math.max(maxX, px);
      maxY = Math.max(maxY, p.seconds * 1000);
    }
    // Whole nines, at least to 99%, at most to 99.999%.
    maxX = Math.min(Math.max(Math.ceil(maxX - 1e-9), 2), 5);
    if (maxY <= 0) maxY = 1;
    const x = (v) => L + (Math.min(v, maxX) / maxX) * (W - L - R);
    const y = (ms) => T + (1 - ms / maxY) * (H - T - B);
    const ticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    for (let n = 0; n <= maxX && n < ticks.length; n++) {
      svg.appendChild(svgEl("line", { class: "grid", x1: x(n), x2: x(n), y1: T, y2: H - B }));
      const anchor = n === 0 ? "start" : n === maxX ? "end" : "middle";
      svg.appendChild(svgEl("text", { x: x(n), y: H - B + 12, "text-anchor": anchor }, ticks[n]));
    }
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const ms = maxY * f;
      svg.appendChild(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(ms), y2: y(ms) }));
      svg.appendChild(svgEl("text", { x: L - 4, y: y(ms) + 3, "text-anchor": "end" }, fmtNum(ms, ms < 10 ? 2 : 1)));
    }
    svg.appendChild(svgEl("text", { x: W / 2, y: H - 3, "text-anchor": "middle" }, "percentile"));
    svg.appendChild(svgEl("text", { x: 4, y: T + 8 }, "ms"));
    const d = points
      .map((p) => x(percentileX(p.percentile)).toFixed(1) + "," + y(p.seconds * 1000).toFixed(1))
      .join(" ");
    svg.appendChild(svgEl("polyline", { class: "series", points: d, stroke: COLORS[0] }));
  }

  async function pollPercentiles() {
    const route = $("percentile-route").value;
    if (!route) {
      renderPercentiles(null);
      return;
    }
    const win = $("percentile-window").value || "5m";
    const data = await getJson("/api/routes/" + encodeURIComponent(route) + "/latency?window=" + encodeURIComponent(win));
    renderPercentiles(data);
  }

  // ---- endpoints --------------------------------------------------------------------

  function yesNo(v, good) {
    if (v === null || v === undefined) return el("td", { class: "none" }, "–");
    return el("td", { class: v === good ? "yes" : "no" }, v ? "yes" : "no");
  }

  function renderEndpoints(data) {
    const tbody = $("endpoints-body");
    if (!data || !Array.isArray(data.upstreams)) {
      noData(tbody, 10);
      return;
    }
    const rows = [];
    for (const u of data.upstreams) {
      for (const e of u.endpoints || []) {
        const id = "ep-" + idPart(u.name) + "-" + idPart(e.address);
        const tr = el("tr", { id });
        tr.appendChild(el("td", {}, u.name));
        tr.appendChild(el("td", {}, e.name));
        tr.appendChild(el("td", {}, e.address));
        tr.appendChild(el("td", {}, e.zone || "–"));
        tr.appendChild(yesNo(e.available, true));
        tr.appendChild(yesNo(e.health ? e.health.healthy : null, true));
        tr.appendChild(yesNo(e.ejected, false));
        tr.appendChild(el("td", { id: id + "-inflight", class: "num" }, e.in_flight));
        tr.appendChild(el("td", { class: "num" }, fmtNum(e.effective_weight, 0)));
        tr.appendChild(el("td", { id: id + "-ewma", class: "num" }, fmtNum(e.ewma_latency_ms, 2) + " ms"));
        rows.push(tr);
      }
    }
    if (rows.length === 0) {
      noData(tbody, 10, "no endpoints");
      return;
    }
    tbody.replaceChildren(...rows);
  }

  // ---- SLOs -------------------------------------------------------------------------

  function fmtPct(ratio, digits) {
    return ratio === null || ratio === undefined ? "–" : fmtNum(ratio * 100, digits) + "%";
  }

  function burnAt(status, secs) {
    const w = (status.windows || []).find((x) => x.window_secs === secs);
    return w ? fmtNum(w.burn_rate, 2) : "–";
  }

  function renderSlos(slos) {
    const tbody = $("slos-body");
    if (!Array.isArray(slos) || slos.length === 0) {
      noData(tbody, 10, Array.isArray(slos) ? "no SLOs configured" : "no data");
      return;
    }
    const rows = slos.map((v) => {
      const st = v.status;
      const tr = el("tr", { id: "slo-" + idPart(v.name) });
      tr.appendChild(el("td", {}, v.name));
      tr.appendChild(el("td", {}, v.sli));
      tr.appendChild(el("td", { class: "num" }, fmtPct(st.objective, 3)));
      const met = v.report.period.met;
      tr.appendChild(el("td", { id: "slo-" + idPart(v.name) + "-achieved", class: "num " + (met === false ? "bad" : "") }, fmtPct(v.report.period.achieved, 3)));
      tr.appendChild(el("td", { class: "num" }, fmtPct(v.report.month_to_date.achieved, 3)));
      tr.appendChild(el("td", { id: "slo-" + idPart(v.name) + "-budget", class: "num " + (st.budget_remaining < 0 ? "bad" : "") }, fmtPct(st.budget_remaining, 1)));
      tr.appendChild(el("td", { class: "num" }, burnAt(st, 300)));
      tr.appendChild(el("td", { class: "num" }, burnAt(st, 3600)));
      tr.appendChild(el("td", { class: "num" }, burnAt(st, 21600)));
      const firing = (st.alerts || []).filter((a) => a.state && a.state.state === "firing");
      const text = firing.length ? firing.map((a) => a.name + " (" + a.severity + ")").join(", ") : "ok";
      tr.appendChild(el("td", { class: firing.length ? "bad" : "ok" }, text));
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  // ---- events -----------------------------------------------------------------------

  function renderEvents(data) {
    const list = $("events-list");
    const events = data && Array.isArray(data.events) ? data.events : null;
    $("events-count").textContent = events ? "(" + events.length + ")" : "";
    if (!events || events.length === 0) {
      list.replaceChildren(el("li", { class: "none" }, events ? "no events" : "no data"));
      return;
    }
    const items = events.slice(0, 100).map((e) => {
      const li = el("li", { class: "event" });
      li.appendChild(el("time", { datetime: e.time }, e.time));
      li.appendChild(el("span", { class: "kind kind-" + e.kind }, e.kind));
      const where = [e.upstream, e.endpoint].filter(Boolean).join(" ");
      if (where) li.appendChild(el("span", { class: "where" }, where + ": "));
      li.appendChild(el("span", { class: "message" }, e.message));
      return li;
    });
    list.replaceChildren(...items);
  }

  // ---- loop -------------------------------------------------------------------------

  async function poll() {
    const [routes, upstreams, events, slos] = await Promise.all([
      getJson("/api/routes"),
      getJson("/api/upstreams"),
      getJson("/api/events"),
      getJson("/api/slos"),
    ]);
    const now = Date.now();
    const routeList = routes && Array.isArray(routes.routes) ? routes.routes : null;
    if (routeList) recordRoutes(routeList, now);
    renderRoutes(routeList);
    renderCharts();
    renderRouteChoices(routeList);
    renderEndpoints(upstreams);
    renderEvents(events);
    renderSlos(slos);
    await pollPercentiles();
    polls += 1;
    $("poll-count").textContent = String(polls);
    $("updated").textContent = new Date(now).toISOString().slice(11, 19) + "Z";
    const status = $("status");
    if (upstreams || events) {
      status.textContent = "live";
      status.className = "status ok";
    } else {
      status.textContent = "admin API unreachable";
      status.className = "status bad";
    }
  }

  async function loop() {
    try {
      await poll();
    } finally {
      setTimeout(loop, POLL_MS);
    }
  }

  $("percentile-window").addEventListener("change", pollPercentiles);
  $("percentile-route").addEventListener("change", pollPercentiles);
  loop();
})();
