// futbot dashboard: the token once (sessionStorage), GET /api/dashboard with it, /ws/signals for new signals.
// Charts are small SVGs drawn here; the page loads nothing from another origin.
"use strict";
(function () {
  const KEY = "futbot_token", API = "/api/dashboard?limit=50", WS_PATH = "/ws/signals";
  const REFRESH_MS = 15000, RECONNECT_MS = 3000, SETTLE_MS = 400;
  const SCALE_MIN = 1.6, SCALE_MAX = 4;   // the PSI axis spans this many act levels, at least / at most
  const SVGNS = "http://www.w3.org/2000/svg";
  const ASK = "Enter an API token to see the dashboard.";
  const REFUSED = "The service refused this token (401): no data is shown. Enter a valid API token.";
  const WS_REFUSED = "The signal stream refused this token: no data is shown. Enter a valid API token.";
  const $ = (id) => document.getElementById(id);
  let ws = null, timer = null, pending = null, seen = new Set();

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const num = (x, d) => (x === null || x === undefined || !isFinite(x)) ? "–" : Number(x).toFixed(d);
  const price = (x) => (x === null || x === undefined) ? "–" : Number(x).toPrecision(7).replace(/\.?0+$/, "");
  const when = (iso) => iso ? iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "") : "–";
  const msIso = (ms) => new Date(ms).toISOString();

  function message(text) { $("message").textContent = text || ""; }
  function setPill(id, text, good) {
    const p = $(id);
    p.textContent = text;
    p.className = "pill" + (good === true ? " good" : good === false ? " bad" : "");
  }
  function showLogin(why) {
    $("login").hidden = false;
    $("data").hidden = true;
    $("signout").hidden = true;
    setPill("status", "not signed in", false);
    message(why);
  }
  function signOut(why) {
    sessionStorage.removeItem(KEY);
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    setPill("live", "stream closed");
    clearTimeout(timer);
    seen = new Set();
    $("signals").tBodies[0].replaceChildren();
    showLogin(why);
  }

  async function load() {
    const token = sessionStorage.getItem(KEY);
    if (!token) { showLogin(ASK); return; }
    clearTimeout(timer);
    let r;
    try { r = await fetch(API, { headers: { Authorization: "Bearer " + token }, cache: "no-store" }); }
    catch (e) { setPill("status", "service unreachable", false); timer = setTimeout(load, REFRESH_MS); return; }
    if (r.status === 401) { signOut(REFUSED); return; }
    if (!r.ok) {
      let why = r.statusText;
      try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
      setPill("status", "error " + r.status + ": " + why, false);
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    const d = await r.json();
    $("login").hidden = true;
    $("data").hidden = false;
    $("signout").hidden = false;
    message("");
    render(d);
    connect(token);
    timer = setTimeout(load, REFRESH_MS);
  }

  function connect(token) {
    if (ws) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + WS_PATH;
    ws = new WebSocket(url, ["bearer", token]);
    ws.onopen = () => setPill("live", "stream open", true);
    ws.onmessage = (ev) => {
      let sig;
      try { sig = JSON.parse(ev.data); } catch (e) { return; }
      if (!sig || !sig.signal_id) return;
      addSignal(Object.assign({}, sig, { entry: (sig.entry || {}).price, outcome: { status: "new" } }), true);
      clearTimeout(pending);
      pending = setTimeout(load, SETTLE_MS);           // the new signal's position, outcome and charts
    };
    ws.onclose = (ev) => {
      ws = null;
      if (ev.code === 1008) { signOut(WS_REFUSED); return; }
      setPill("live", "stream closed, reconnecting", false);
      setTimeout(() => { if (sessionStorage.getItem(KEY)) connect(sessionStorage.getItem(KEY)); }, RECONNECT_MS);
    };
  }

  function signalRow(s, fresh) {
    const o = s.outcome || {};
    const tr = el("tr", { "data-signal-id": s.signal_id });
    if (fresh) tr.className = "new";
    const tps = (s.take_profits || []).map((t) => price(t.price)).join(" / ");
    const status = o.status === "closed" ? "closed: " + o.exit : o.status;
    const cells = [[when(s.timestamp)], [s.symbol], [s.side, s.side], [num(s.confidence, 3), "num"],
                   [price(s.entry), "num"], [price(s.stop_loss), "num"], [tps], [status],
                   [num(o.pnl, 2), "num"], [num(o.r_multiple, 2), "num"]];
    for (const [text, cls] of cells) tr.appendChild(el("td", cls ? { class: cls } : {}, text));
    return tr;
  }
  function addSignal(s, fresh) {
    const body = $("signals").tBodies[0];
    if (seen.has(s.signal_id)) return;
    seen.add(s.signal_id);
    body.insertBefore(signalRow(s, fresh), body.firstChild);
    $("signal-count").textContent = "(" + body.rows.length + " shown)";
  }
  function renderSignals(sigs) {
    const body = $("signals").tBodies[0];
    const fresh = new Set([...body.querySelectorAll("tr.new")].map((r) => r.getAttribute("data-signal-id")));
    body.replaceChildren();
    seen = new Set();
    for (const s of sigs.slice().reverse()) addSignal(s, fresh.has(s.signal_id));
    if (!sigs.length) $("signal-count").textContent = "(none yet)";
  }

  // A line chart: series [{t: [...], y: [...], stroke, dash}], horizontal levels [{y, stroke, label}], marks [t]
  function lineChart(series, levels, marks, opts) {
    const W = 600, H = (opts && opts.height) || 200, L = 58, R = 8, T = 8, B = 22;
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": (opts && opts.label) || "chart" });
    const ts = series.flatMap((s) => s.t), ys = series.flatMap((s) => s.y).concat(levels.map((l) => l.y))
      .filter((v) => v !== null && isFinite(v));
    if (!ts.length || !ys.length) {
      const tx = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
      tx.textContent = "no data yet";
      svg.appendChild(tx);
      return svg;
    }
    let t0 = Math.min(...ts), t1 = Math.max(...ts), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (t1 === t0) t1 = t0 + 1;
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const X = (t) => L + (t - t0) / (t1 - t0) * (W - L - R), Y = (y) => T + (y1 - y) / (y1 - y0) * (H - T - B);
    const frame = { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d0d5dd" };
    svg.appendChild(svgEl("rect", frame));
    for (const [v, anchor] of [[y1 - pad, "end"], [y0 + pad, "end"]]) {
      const tx = svgEl("text", { x: L - 4, y: Y(v) + 4, "text-anchor": anchor });
      tx.textContent = price(v);
      svg.appendChild(tx);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const tx = svgEl("text", { x: X(t), y: H - 6, "text-anchor": anchor });
      tx.textContent = when(msIso(t));
      svg.appendChild(tx);
    }
    for (const m of marks || []) {
      const at = { x1: X(m), x2: X(m), y1: T, y2: H - B, stroke: "#98a2b3", "stroke-dasharray": "2 3" };
      svg.appendChild(svgEl("line", at));
    }
    for (const l of levels) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: Y(l.y), y2: Y(l.y), stroke: l.stroke, "stroke-width": 1.2,
                                       "stroke-dasharray": l.dash || "" }));
    }
    for (const s of series) {
      const pts = s.t.map((t, i) => [t, s.y[i]]).filter((p) => p[1] !== null && isFinite(p[1]));
      if (!pts.length) continue;
      const d = pts.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: s.stroke, "stroke-width": s.width || 1.5,
                                      "stroke-dasharray": s.dash || "" }));
    }
    return svg;
  }
  function legend(items) {
    const p = el("div", { class: "legend" });
    for (const [text, color] of items) {
      const s = el("span", {}, "");
      const sw = svgEl("svg", { width: 14, height: 8, viewBox: "0 0 14 8" });
      sw.appendChild(svgEl("line", { x1: 0, x2: 14, y1: 4, y2: 4, stroke: color, "stroke-width": 2 }));
      s.appendChild(sw);
      s.appendChild(document.createTextNode(" " + text));
      p.appendChild(s);
    }
    return p;
  }

  function renderPositions(d) {
    const box = $("positions"), charts = $("charts");
    box.replaceChildren();
    charts.replaceChildren();
    if (!d.positions.length) box.appendChild(el("p", { class: "empty" }, "No open position."));
    else {
      const ul = el("ul", { class: "plain" });
      for (const p of d.positions) {
        const li = el("li", {});
        li.appendChild(el("span", { class: p.side }, p.symbol + " " + p.side + " "));
        li.appendChild(document.createTextNode(`x${p.leverage} since ${when(p.decided)}: entry ${price(p.entry)}, ` +
          `stop ${price(p.stop)}, targets ${p.targets.map((t) => price(t.price)).join(" / ")}, P&L ${num(p.pnl, 2)}`));
        ul.appendChild(li);
      }
      box.appendChild(ul);
    }
    for (const [sym, px] of Object.entries(d.prices)) {
      const mine = d.positions.filter((p) => p.symbol === sym);
      const levels = mine.flatMap((p) => [{ y: p.entry, stroke: "#1f5fbf" },
        { y: p.stop, stroke: "#b42318", dash: "5 3" },
        ...p.targets.map((t) => ({ y: t.price, stroke: "#12805c", dash: "5 3" }))]);
      const t0 = px.t.length ? px.t[0] : 0;
      const div = el("div", { class: "chart" });
      div.appendChild(el("h3", {}, `${sym} ${px.interval} closes` + (mine.length ? "" : " (no open position)")));
      div.appendChild(lineChart([{ t: px.t, y: px.close, stroke: "#1d2330" }], levels,
                                mine.map((p) => p.decided_ms).filter((t) => t >= t0), { label: sym + " price" }));
      if (mine.length) div.appendChild(legend([["entry", "#1f5fbf"], ["stop", "#b42318"], ["targets", "#12805c"]]));
      charts.appendChild(div);
    }
  }

  function renderEquity(eq) {
    const box = $("equity");
    box.replaceChildren();
    const series = [{ t: eq.t, y: eq.equity, stroke: "#1f5fbf" }];
    if (eq.expected.length) series.push({ t: eq.t, y: eq.expected, stroke: "#98a2b3", dash: "6 4" });
    box.appendChild(lineChart(series, [], [], { label: "equity", height: 180 }));
    box.appendChild(legend([["live equity (USDT)", "#1f5fbf"], ["backtest expectation", "#98a2b3"]]));
    const last = eq.equity.length ? eq.equity[eq.equity.length - 1] : null;
    $("equity-note").textContent = eq.expected_daily === null ? "The models record no test-period return." :
      `Now ${num(last, 2)} USDT; the backtest expects ${num(100 * eq.expected_daily, 3)}% a day ` +
      "(the served models' test-period returns as daily rates, compounded).";
  }

  function renderDrift(dr) {
    const box = $("drift");
    box.replaceChildren();
    const syms = Object.entries(dr.symbols);
    if (!syms.length) { box.appendChild(el("p", { class: "empty" }, "No drift pass yet.")); return; }
    for (const [sym, v] of syms) {
      box.appendChild(el("h3", {}, `${sym}: verdict ${v.level}; ${v.n_act} features past act, ${v.n_warn} past warn ` +
        `(${v.rows} rows to ${when(v.t)})`));
      const W = 600, rowH = 18, L = 170, R = 50, feats = v.features || [];
      const H = rowH * feats.length + 20;
      const top = Math.max(dr.act * SCALE_MIN, Math.min(dr.act * SCALE_MAX, ...feats.map((f) => f.psi || 0)));
      const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": sym + " drift" });
      const X = (v) => L + Math.min(v, top) / top * (W - L - R);
      feats.forEach((f, i) => {
        const y = 4 + i * rowH, color = f.level === "act" ? "#b42318" : f.level === "warn" ? "#b54708" : "#12805c";
        const name = svgEl("text", { x: L - 4, y: y + 12, "text-anchor": "end" });
        name.textContent = f.name;
        svg.appendChild(name);
        svg.appendChild(svgEl("rect", { x: L, y, width: Math.max(1, X(f.psi) - L), height: rowH - 5, fill: color }));
        const val = svgEl("text", { x: Math.min(X(f.psi) + 4, W - R + 4), y: y + 12 });
        val.textContent = num(f.psi, 3);
        svg.appendChild(val);
      });
      for (const [lv, color] of [[dr.warn, "#b54708"], [dr.act, "#b42318"]]) {
        const at = { x1: X(lv), x2: X(lv), y1: 0, y2: H - 16, stroke: color, "stroke-dasharray": "4 3" };
        svg.appendChild(svgEl("line", at));
        const tx = svgEl("text", { x: X(lv), y: H - 4, "text-anchor": "middle" });
        tx.textContent = lv;
        svg.appendChild(tx);
      }
      box.appendChild(svg);
      const pp = v.prediction_psi || {};
      const note = `prediction PSI: long ${num(pp.p_long, 3)}, short ${num(pp.p_short, 3)}; ` +
        `levels: warn ${dr.warn}, act ${dr.act}`;
      box.appendChild(el("p", { class: "note" }, note));
    }
  }

  function renderHealth(h) {
    const box = $("health");
    box.replaceChildren();
    const conns = (h.websocket || {}).connections || [];
    const ul = el("ul", { class: "plain" });
    ul.appendChild(el("li", {}, `service ${h.status}, up ${num(h.uptime_s, 0)} s, ` +
      `last decision ${when(h.last_decision)}, ${h.signals_emitted} signals emitted`));
    const up = conns.filter((c) => c.state === "open").length;
    ul.appendChild(el("li", {}, `exchange WebSocket: ${up} of ${conns.length} connections open, ` +
      `${(h.websocket || {}).reconnects || 0} reconnects; ${h.clients} dashboard/API clients`));
    if (h.system && h.system.rss_mb !== undefined) {
      ul.appendChild(el("li", {}, `memory ${num(h.system.rss_mb, 0)} MB, CPU ${num(h.system.cpu_percent, 0)}%, ` +
        `disk ${num(h.system.disk_free_gb, 1)} GB free`));
    }
    box.appendChild(ul);
    const rows = Object.entries(h.streams || {});
    const wrap = el("div", { class: "scroll" }), t = el("table", { id: "streams" });
    const head = el("tr", {});
    for (const c of ["stream", "last close (UTC)", "received"]) head.appendChild(el("th", {}, c));
    t.appendChild(el("thead", {})).appendChild(head);
    const body = t.appendChild(el("tbody", {}));
    for (const [k, v] of rows) {
      const tr = el("tr", {});
      tr.appendChild(el("td", {}, k));
      tr.appendChild(el("td", {}, when(v.last_close)));
      tr.appendChild(el("td", { class: "num" }, num(v.received_s_ago, 1) + " s ago"));
      body.appendChild(tr);
    }
    if (!rows.length) {
      body.appendChild(el("tr", {})).appendChild(el("td", { colspan: 3, class: "empty" }, "no bar streamed yet"));
    }
    wrap.appendChild(t);
    box.appendChild(wrap);
  }

  function renderAlerts(alerts) {
    const box = $("alerts");
    box.replaceChildren();
    if (!alerts.length) { box.appendChild(el("p", { class: "empty" }, "No open alert.")); return; }
    const ul = el("ul", { class: "plain" });
    for (const a of alerts) {
      const li = el("li", {});
      li.appendChild(el("span", { class: "sev-" + a.severity }, a.severity.toUpperCase() + " "));
      li.appendChild(document.createTextNode(`${a.title} (${a.kind}, x${a.count}, ${when(a.t)})`));
      if (a.message) li.appendChild(el("div", { class: "note" }, a.message));
      ul.appendChild(li);
    }
    box.appendChild(ul);
  }

  function render(d) {
    setPill("status", d.status, d.status === "live");
    $("asof").textContent = d.t ? "as of " + when(d.t) + " UTC" : "";
    renderSignals(d.signals);
    renderPositions(d);
    renderEquity(d.equity);
    renderDrift(d.drift);
    renderHealth(d.health);
    renderAlerts(d.alerts);
    window.futbotDashboard = { loaded: Date.now(), signals: d.signals.length };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const tok = $("token").value.trim();
      $("token").value = "";
      if (!tok) { showLogin(ASK); return; }
      sessionStorage.setItem(KEY, tok);
      message("");
      load();
    });
    $("signout").addEventListener("click", () => signOut("Token forgotten. Enter an API token to see the dashboard."));
    load();
  });
})();
