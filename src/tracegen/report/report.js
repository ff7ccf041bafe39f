// tracegen run report. Reads the JSON in #report-data and builds the page. Data is only ever inserted as
// text (textContent / SVG text nodes), never as markup; nothing is fetched from the network.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var app = document.getElementById("app");
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#3e63dd", "#12a594", "#f76b15", "#8e4ec6", "#e5484d", "#ffb224", "#0090ff", "#30a46c"];

  // ---- helpers ------------------------------------------------------------------------------------------
  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function sv(tag, attrs) {
    var e = document.createElementNS(NS, tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] === null || attrs[k] === undefined) return;
      if (k === "text") e.textContent = String(attrs[k]);
      else if (k === "on") Object.keys(attrs.on).forEach(function (ev) { e.addEventListener(ev, attrs.on[ev]); });
      else e.setAttribute(k, String(attrs[k]));
    });
  }
  function add(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
  function usd(x) {
    if (x === null || x === undefined) return "–";
    x = Number(x);
    var d = x >= 100 ? 2 : x >= 1 ? 3 : x >= 0.01 ? 4 : 6;
    return "$" + x.toLocaleString("en-US", { minimumFractionDigits: Math.min(d, 2), maximumFractionDigits: d });
  }
  function pct(a, b) { return b ? (100 * a / b).toFixed(a / b < 0.1 ? 1 : 0) + "%" : "–"; }
  function secs(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function sum(a) { return a.reduce(function (x, y) { return x + y; }, 0); }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
  }
  function tickFmt(v, kind) {
    if (kind === "usd") return usd(v);
    if (kind === "s") return secs(v);
    if (Math.abs(v) >= 1000) return (v / 1000).toLocaleString("en-US", { maximumFractionDigits: 1 }) + "k";
    return String(Math.round(v * 100) / 100);
  }
  function field(cls, key, value) { return el("div", { "class": "field " + cls }, el("div", { "class": "fk", text: key }), el("div", { "class": "fv", text: value || "—" })); }
  function smLabel(k) { return /^\d+$/.test(k) ? "#" + k : k; }
  function smText(k) { return (D.mix.system_texts || {})[k]; }

  // ---- charts (hand-rolled SVG) ---------------------------------------------------------------------------
  // lineChart: series [{points: [[x, y]], color, label, area}], opts {yKind, xKind, yMax, hline, bars}
  function lineChart(series, opts) {
    var W = 560, H = 210, L = 62, R = 14, T = 12, B = 30;
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null) { xs.push(p[0]); ys.push(p[1]); } }); });
    var xMax = xs.length ? Math.max.apply(null, xs) : 1, xMin = Math.min.apply(null, xs.concat([0]));
    var dataMax = Math.max.apply(null, ys.concat([1e-9]));
    var hline = opts.hline && opts.hline.y <= 2.5 * dataMax ? opts.hline : null;  // far above: a note instead
    var yMax = niceMax(Math.max(dataMax, hline ? hline.y : 0));
    function X(v) { return L + (W - L - R) * (v - xMin) / ((xMax - xMin) || 1); }
    function Y(v) { return H - B - (H - T - B) * v / yMax; }
    var g = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.title || "chart", "class": "chart-svg" });
    for (var i = 0; i <= 4; i++) {
      var yv = yMax * i / 4;
      g.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(yv), y2: Y(yv), "class": i ? "gridline" : "axis" }));
      g.appendChild(sv("text", { x: L - 6, y: Y(yv) + 4, "text-anchor": "end", text: tickFmt(yv, opts.yKind) }));
    }
    for (var j = 0; j <= 4; j++) {
      var xv = xMin + (xMax - xMin) * j / 4;
      g.appendChild(sv("text", { x: X(xv), y: H - B + 16, "text-anchor": j === 0 ? "start" : j === 4 ? "end" : "middle",
        text: tickFmt(xv, opts.xKind) }));
    }
    if (opts.xLabel) g.appendChild(sv("text", { x: W - R, y: H - 2, "text-anchor": "end", text: opts.xLabel }));
    (opts.bars || []).forEach(function (bs) {
      var bw = Math.max(1, (W - L - R) / Math.max(1, bs.points.length) - 1);
      bs.points.forEach(function (p) {
        if (!p[1]) return;
        g.appendChild(sv("rect", { x: X(p[0]) - bw, y: Y(p[1]), width: bw, height: Math.max(1, Y(0) - Y(p[1])),
          fill: bs.color, opacity: 0.85 }, sv("title", { text: bs.label + ": " + num(p[1]) })));
      });
    });
    series.forEach(function (s) {
      var pts = s.points.filter(function (p) { return p[1] !== null; });
      if (!pts.length) return;
      var d = pts.map(function (p, k) { return (k ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1); }).join("");
      if (s.area) g.appendChild(sv("path", { d: d + "L" + X(pts[pts.length - 1][0]).toFixed(1) + "," + Y(0) + "L" + X(pts[0][0]).toFixed(1) + "," + Y(0) + "Z",
        fill: s.color, opacity: 0.12 }));
      g.appendChild(sv("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-linejoin": "round" }));
      if (pts.length < 3) pts.forEach(function (p) { g.appendChild(sv("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: s.color })); });
    });
    if (hline) {
      g.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(hline.y), y2: Y(hline.y), "class": "budget" }));
      g.appendChild(sv("text", { x: W - R, y: Y(hline.y) - 5, "text-anchor": "end", "class": "lbl", text: hline.label }));
    } else if (opts.hline) {
      g.appendChild(sv("text", { x: W - R, y: T + 4, "text-anchor": "end", "class": "lbl budget-note",
        text: opts.hline.label + " is off the scale: " + pct(dataMax, opts.hline.y) + " used" }));
    }
    return g;
  }

  // groupedBars: cats [{key, values: [..]}], names [..]
  function groupedBars(cats, names, opts) {
    var W = 560, H = 220, L = 48, R = 8, T = 10, B = 34;
    var vmax = niceMax(Math.max.apply(null, [1].concat(cats.map(function (c) { return Math.max.apply(null, c.values); }))));
    var g = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.title, "class": "chart-svg" });
    function Y(v) { return H - B - (H - T - B) * v / vmax; }
    for (var i = 0; i <= 4; i++) {
      var yv = vmax * i / 4;
      g.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(yv), y2: Y(yv), "class": i ? "gridline" : "axis" }));
      g.appendChild(sv("text", { x: L - 6, y: Y(yv) + 4, "text-anchor": "end", text: tickFmt(yv) }));
    }
    var cw = (W - L - R) / Math.max(1, cats.length), bw = Math.min(26, (cw - 8) / names.length);
    cats.forEach(function (c, ci) {
      var x0 = L + ci * cw + (cw - bw * names.length) / 2;
      c.values.forEach(function (v, vi) {
        g.appendChild(sv("rect", { x: x0 + vi * bw, y: Y(v), width: bw - 2, height: Math.max(0, Y(0) - Y(v)), rx: 2,
          fill: COLORS[vi] }, sv("title", { text: c.key + " " + names[vi] + ": " + num(v) })));
      });
      g.appendChild(sv("text", { x: L + ci * cw + cw / 2, y: H - B + 16, "text-anchor": "middle", "class": "lbl",
        text: opts.label ? opts.label(c.key) : c.key }));
    });
    return g;
  }

  function histogram(bins, edges, color, kind, wide) {
    var last = 0;
    bins.forEach(function (v, i) { if (v) last = i; });
    var n = Math.min(bins.length, Math.max(last + 2, 6));  // trailing empty bins are left out
    bins = bins.slice(0, n);
    var W = wide ? 560 : 280, H = wide ? 190 : 110, L = 6, R = 6, T = 8, B = 22;
    var g = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "histogram", "class": "chart-svg" });
    var bw = (W - L - R) / n, vmax = Math.max.apply(null, bins.concat([1]));
    bins.forEach(function (v, i) {
      var h = (H - T - B) * v / vmax;
      var lo = edges[i], hi = i + 1 < edges.length ? edges[i + 1] : null;
      var range = hi === null ? "≥ " + tickFmt(lo, kind) : tickFmt(lo, kind) + "–" + tickFmt(hi, kind);
      g.appendChild(sv("rect", { x: L + i * bw + 1, y: H - B - h, width: bw - 2, height: Math.max(v ? 1 : 0, h), rx: 1.5,
        fill: color }, sv("title", { text: range + ": " + num(v) })));
    });
    g.appendChild(sv("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }));
    [0, Math.floor(n / 2), n - 1].forEach(function (i) {
      var last = i === n - 1 && n === edges.length;
      g.appendChild(sv("text", { x: L + i * bw + bw / 2, y: H - 6, "text-anchor": "middle", text: (last ? "≥" : "") + tickFmt(edges[i], kind) }));
    });
    return g;
  }

  function legend(items) {
    return el("div", { "class": "legend" }, items.map(function (it) {
      return el("span", null, el("i", { style: "background:" + it[1] }), it[0]);
    }));
  }
  function table(headers, rows, numeric) {
    return el("table", null,
      el("thead", null, el("tr", null, headers.map(function (h, i) { return el("th", { "class": numeric[i] ? "num" : null, text: h }); }))),
      el("tbody", null, rows.map(function (r) {
        return el("tr", null, r.map(function (c, i) { return el("td", { "class": numeric[i] ? "num" : null }, c); }));
      })));
  }
  function barCell(v, max, color) {
    return el("span", null, el("span", { "class": "bar", style: "width:" + Math.max(2, 120 * v / (max || 1)).toFixed(0) + "px;background:" + (color || COLORS[0]) }));
  }
  function section(id, title, note) {
    var s = el("section", { "class": "card", id: id }, el("h2", { text: title }), note ? el("p", { "class": "note", text: note }) : null);
    app.appendChild(s);
    toc.appendChild(el("a", { href: "#" + id, text: title }));
    return s;
  }

  // ---- header and tiles -----------------------------------------------------------------------------------
  var S = D.stats || {};
  var answered = sum((D.mix.submix || []).map(function (m) { return m.answered; }));
  var rejected = sum((D.reasons || []).map(function (r) { return r.n; }));
  app.appendChild(el("header", { "class": "top" }, el("h1", null, el("span", { "class": "brand", text: "tracegen" }), " report · ", D.run)));
  app.appendChild(el("p", { "class": "sub", text: [
    D.stages.length ? "stages " + D.stages.join(" → ") : "teacher " + (D.model || "?"),
    S.stop_reason ? "stopped: " + S.stop_reason : null,
    D.created ? "planned " + D.created : null, D.version ? "tracegen " + D.version : null
  ].filter(Boolean).join(" · ") }));
  var toc = el("nav", { "class": "toc" });
  app.appendChild(toc);
  var tiles = el("div", { "class": "tiles", id: "tiles" });
  app.appendChild(tiles);
  function tile(key, value, note, bad) {
    tiles.appendChild(el("div", { "class": "tile" + (bad ? " bad" : ""), "data-key": key },
      el("div", { "class": "k", text: key }), el("div", { "class": "v", text: value }), note ? el("div", { "class": "n", text: note }) : null));
  }
  var plan = D.plan || {};
  var planned = D.stages.length ? sum(D.mix.submix.map(function (m) { return m.planned; })) : plan.planned_total;
  tile("planned", num(planned), D.stages.length ? "requests over " + D.stages.length + " stages" : plan.rows_read ? num(plan.rows_read) + " source rows read" : null);
  tile("answered", num(answered), pct(answered, planned) + " of planned");
  tile("kept", num((D.clean || {}).kept), pct((D.clean || {}).kept || 0, answered) + " of answered");
  tile("rejected", num(rejected), "filters, dedup, plan");
  tile("spent", usd(D.spent_usd), D.budget_usd ? "of " + usd(D.budget_usd) + " budget (" + pct(D.spent_usd || 0, D.budget_usd) + ")" : "no budget set");
  tile("tokens", num((S.prompt_tokens || 0) + (S.completion_tokens || 0)), num(S.prompt_tokens) + " in · " + num(S.completion_tokens) + " out");
  tile("429s", num(S.n_429 || 0), num(S.n_retries || 0) + " retries", (S.n_429 || 0) > 0);
  tile("failed", num(S.failed || 0), S.elapsed_s !== undefined ? "run took " + secs(S.elapsed_s) : null, (S.failed || 0) > 0);

  // ---- spend, rate, latency -------------------------------------------------------------------------------
  var tl = D.timeline || { points: [] };
  var sec = section("spend", "Spend, request rate and latency",
    tl.timed ? "Answers bucketed every " + secs(tl.bucket_s) + " of wall time (traces.jsonl answered_at); spend is cumulative billed cost."
      : "These traces carry no timestamps (Batch API or an older run): spend is plotted against answers in completion order.");
  var grid = el("div", { "class": "grid2" });
  sec.appendChild(grid);
  var spendPts = tl.points.map(function (p) { return [p[0], p[1]]; });
  if (spendPts.length) spendPts.unshift([0, 0]);
  grid.appendChild(el("div", { "class": "chart", id: "chart-spend" }, el("h3", { text: "Spend over time vs budget" }),
    lineChart([{ points: spendPts, color: COLORS[0], area: true }], { yKind: "usd", xKind: tl.timed ? "s" : null,
      xLabel: tl.timed ? "time since first answer" : "answers", title: "spend",
      hline: D.budget_usd ? { y: D.budget_usd, label: "budget " + usd(D.budget_usd) } : null }),
    legend([["spent", COLORS[0]], ["budget", "#e5484d"]])));
  if (tl.timed) {
    grid.appendChild(el("div", { "class": "chart", id: "chart-rate" }, el("h3", { text: "Answers per second, retries and 429s" }),
      lineChart([{ points: tl.points.map(function (p) { return [p[0], p[2]]; }), color: COLORS[1] }],
        { xKind: "s", xLabel: "time", title: "rate", bars: [
          { points: tl.points.map(function (p) { return [p[0], p[4]]; }), color: "#ffb224", label: "retries/s" },
          { points: tl.points.map(function (p) { return [p[0], p[5]]; }), color: "#e5484d", label: "429s/s" }] }),
      legend([["answers/s", COLORS[1]], ["retries/s", "#ffb224"], ["429s/s", "#e5484d"]])));
    grid.appendChild(el("div", { "class": "chart", id: "chart-latency" }, el("h3", { text: "Mean latency over time" }),
      lineChart([{ points: tl.points.map(function (p) { return [p[0], p[3]]; }), color: COLORS[3] }], { yKind: "s", xKind: "s", xLabel: "time", title: "latency" })));
    var lat = D.latency;
    grid.appendChild(el("div", { "class": "chart mini", id: "chart-latency-hist" }, el("h3", { text: "Latency distribution (" + num(lat.n) + " answers)" }),
      histogram(lat.bins, lat.edges, COLORS[3], "s", true)));
  }
  var fails = Object.keys(D.failed || {});
  sec.appendChild(el("p", { "class": "note", text: "429 responses: " + num(S.n_429 || 0) + " · 5xx: " + num(S.n_5xx || 0) +
    " · timeouts: " + num(S.n_timeouts || 0) + " · retries: " + num(S.n_retries || 0) + " · failed requests: " + num(S.failed || 0) +
    (fails.length ? " (" + fails.map(function (k) { return k + " " + D.failed[k]; }).join(", ") + ")" : "") }));

  // ---- the mix -------------------------------------------------------------------------------------------
  var mix = section("mix", "The mix: planned, answered, kept", "Per FLAN v2 submix and per Orca system message (ids from Orca Table 2).");
  var mg = el("div", { "class": "grid2" });
  mix.appendChild(mg);
  var names = ["planned", "answered", "kept"];
  mg.appendChild(el("div", { "class": "chart", id: "chart-mix" }, el("h3", { text: "Per submix" }),
    groupedBars(D.mix.submix.map(function (m) { return { key: m.key, values: [m.planned, m.answered, m.kept] }; }), names, { title: "mix" }),
    legend(names.map(function (n, i) { return [n, COLORS[i]]; }))));
  var smMax = Math.max.apply(null, [1].concat(D.mix.system_message.map(function (m) { return m.planned; })));
  mg.appendChild(el("div", { id: "table-system-messages" }, el("h3", { text: "Per system message" }),
    table(["", "planned", "answered", "kept", "kept share"], D.mix.system_message.map(function (m) {
      return [el("span", { title: smText(m.key) || "", text: smLabel(m.key) }), num(m.planned), num(m.answered), num(m.kept),
        el("span", null, barCell(m.kept, smMax), " " + pct(m.kept, m.planned))];
    }), [0, 1, 1, 1, 0])));

  // ---- drops ---------------------------------------------------------------------------------------------
  var drops = section("drops", "Why rows were dropped", "Every line of rejected.jsonl, by stage and reason, with examples; plus what planning left out before sending.");
  var rmax = Math.max.apply(null, [1].concat(D.reasons.map(function (r) { return r.n; })));
  drops.appendChild(D.reasons.length ? table(["stage", "reason", "rows", "", "examples"], D.reasons.map(function (r) {
    var ex = (D.examples[r.reason] || []);
    return [r.stage, r.reason, num(r.n), barCell(r.n, rmax, "#e5484d"), ex.length ? el("details", { "class": "ex" },
      el("summary", { text: ex.length + " example" + (ex.length > 1 ? "s" : "") }),
      ex.map(function (x) {
        return el("div", null, el("div", { "class": "count", text: x.id + " — " + x.detail }), el("div", { "class": "q", text: x.question }),
          x.eval_item ? el("div", { "class": "q", text: "evaluation item: " + x.eval_item }) : null);
      })) : ""];
  }), [0, 0, 1, 0, 0]) : el("p", { "class": "empty", text: "Nothing was rejected." }));
  var pd = plan.dropped || {};
  var pk = Object.keys(pd).filter(function (k) { return pd[k]; });
  if (pk.length) drops.appendChild(el("p", { "class": "note", text: "Left out while planning (never sent): " +
    pk.map(function (k) { return k + " " + num(pd[k]); }).join(" · ") }));
  var dc = Object.keys(D.decontaminated || {});
  if (dc.length) {
    drops.appendChild(el("h3", { text: "Decontamination" }));
    drops.appendChild(el("div", { id: "table-decontamination" }, table(["evaluation set", "source rows dropped"],
      dc.map(function (k) { return [k, num(D.decontaminated[k])]; }), [0, 1])));
  }

  // ---- lengths and answer check ---------------------------------------------------------------------------
  var lens = section("lengths", "Response lengths", "Completion tokens per answer (every answer in traces.jsonl).");
  var pick = el("select", { id: "length-group" });
  Object.keys(D.lengths).filter(function (k) { return k !== "edges"; }).forEach(function (k) { pick.appendChild(el("option", { value: k, text: "by " + k })); });
  var lgrid = el("div", { "class": "grid3", id: "length-grid" });
  lens.appendChild(el("div", { "class": "controls" }, pick));
  lens.appendChild(lgrid);
  function drawLengths() {
    lgrid.textContent = "";
    var groups = D.lengths[pick.value] || {};
    Object.keys(groups).forEach(function (gk, i) {
      var gr = groups[gk];
      var title = pick.value === "system message" ? smLabel(gk) : gk;
      lgrid.appendChild(el("div", { "class": "mini", title: pick.value === "system message" ? smText(gk) || "" : "" },
        el("h3", { text: title }), el("div", { "class": "meta", text: num(gr.n) + " answers · mean " + num(gr.mean) + " tokens" }),
        histogram(gr.bins, D.lengths.edges, COLORS[i % COLORS.length])));
    });
  }
  pick.addEventListener("change", drawLengths);
  drawLengths();

  var ac = section("answer-check", "Answer check per submix", "Does the response's final answer agree with FLAN's reference? (clean.jsonl and filtered/deduplicated rows; unknown = the target is not a short answer.)");
  var acKeys = Object.keys(D.answer_check);
  ac.appendChild(acKeys.length ? table(["submix", "agrees", "disagrees", "unknown", "agreement (of decided)", ""], acKeys.map(function (k) {
    var c = D.answer_check[k], a = c.agrees || 0, d = c.disagrees || 0, u = c.unknown || 0;
    var W = 160, tot = a + d + u || 1;
    var bar = sv("svg", { viewBox: "0 0 " + W + " 12", width: W, height: 12, "class": "stack" },
      sv("rect", { x: 0, y: 0, width: W * a / tot, height: 12, fill: "#30a46c" }),
      sv("rect", { x: W * a / tot, y: 0, width: W * d / tot, height: 12, fill: "#e5484d" }),
      sv("rect", { x: W * (a + d) / tot, y: 0, width: W * u / tot, height: 12, fill: "#d0d5dd" }));
    return [k, num(a), num(d), num(u), a + d ? pct(a, a + d) : "–", bar];
  }), [0, 1, 1, 1, 1, 0]) : el("p", { "class": "empty", text: "No answers were checked yet (run clean / export)." }));
  if (acKeys.length) ac.appendChild(legend([["agrees", "#30a46c"], ["disagrees", "#e5484d"], ["unknown", "#d0d5dd"]]));

  // ---- stages side by side --------------------------------------------------------------------------------
  if (D.stages.length > 1) {
    var st = section("stages", "Stages side by side", "The same (system message, question) answered by each teacher stage, in training order.");
    var sbs = D.side_by_side || [];
    var stList = el("div", { "class": "side", id: "side-by-side" });
    st.appendChild(stList);
    sbs.slice(0, 12).forEach(function (r) {
      stList.appendChild(el("div", { "class": "row" },
        el("div", { "class": "head" }, el("span", { "class": "id", text: r.id }), el("span", { "class": "badge", text: r.submix }), el("span", { "class": "badge", text: "system " + smLabel(r.sm) })),
        field("system", "system message", r.system || "(none)"), field("question", "question", r.question),
        el("div", { "class": "cols", style: "grid-template-columns: repeat(" + D.stages.length + ", 1fr)" }, D.stages.map(function (name) {
          var a = r.answers[name] || {};
          return el("div", { "class": "col" }, el("div", { "class": "model", text: name + " · " + (a.model || "") + " · " + num(a.tokens) + " tokens" }),
            el("div", { "class": "fv", text: a.response || "—" }));
        }))));
    });
    if (!sbs.length) st.appendChild(el("p", { "class": "empty", text: "No question was answered by every stage yet." }));
  }

  // ---- sample browser -------------------------------------------------------------------------------------
  var br = section("samples", "Sample browser", "A seeded sample: up to 400 kept rows and up to 40 per rejection reason. Search matches question, response, system message, target and id.");
  var rows = D.rows || [];
  function opts(id, label, values, fmt) {
    var s = el("select", { id: id }, el("option", { value: "", text: label }));
    values.forEach(function (v) { s.appendChild(el("option", { value: v, text: fmt ? fmt(v) : v })); });
    return s;
  }
  function uniq(f) { var seen = {}; rows.forEach(function (r) { seen[f(r)] = 1; }); return Object.keys(seen).sort(function (a, b) { return a.localeCompare(b, "en", { numeric: true }); }); }
  var q = el("input", { id: "search", type: "search", placeholder: "Search questions, answers, system messages…" });
  var fSub = opts("filter-submix", "all submixes", uniq(function (r) { return r.submix; }));
  var fSm = opts("filter-system", "all system messages", uniq(function (r) { return r.sm; }), smLabel);
  var fSt = opts("filter-status", "kept and rejected", uniq(function (r) { return r.status; }));
  var count = el("span", { "class": "count", id: "sample-count" });
  var list = el("div", { id: "sample-list" });
  var moreBtn = el("button", { "class": "more", type: "button", text: "Show more" });
  br.appendChild(el("div", { "class": "controls" }, q, fSub, fSm, fSt, count));
  br.appendChild(list);
  br.appendChild(moreBtn);
  var shown = 10, matches = [];
  function verdictBadge(v) { return v === true ? el("span", { "class": "badge agrees", text: "agrees with target" }) : v === false ? el("span", { "class": "badge disagrees", text: "disagrees with target" }) : el("span", { "class": "badge", text: "verdict unknown" }); }
  function rowCard(r) {
    return el("div", { "class": "row sample-row" },
      el("div", { "class": "head" }, el("span", { "class": "id", text: r.id }), el("span", { "class": "badge", text: r.submix }),
        el("span", { "class": "badge", text: "system " + smLabel(r.sm) }), r.stage ? el("span", { "class": "badge", text: r.stage }) : null,
        el("span", { "class": "badge " + (r.status === "kept" ? "kept" : "rej"), text: r.status }), verdictBadge(r.verdict),
        el("span", { "class": "count", text: num(r.tokens) + " tokens" })),
      field("system", "system message", r.system || "(none: no system message sent)"), field("question", "question", r.question),
      field("response", "response", r.response), field("target", "target", r.target));
  }
  function refilter() {
    var needle = q.value.trim().toLowerCase();
    matches = rows.filter(function (r) {
      if (fSub.value && r.submix !== fSub.value) return false;
      if (fSm.value && r.sm !== fSm.value) return false;
      if (fSt.value && r.status !== fSt.value) return false;
      if (!needle) return true;
      return [r.question, r.response, r.system, r.target, r.id].join("\n").toLowerCase().indexOf(needle) >= 0;
    });
    shown = 10;
    draw();
  }
  function draw() {
    list.textContent = "";
    matches.slice(0, shown).forEach(function (r) { list.appendChild(rowCard(r)); });
    count.textContent = num(matches.length) + " of " + num(rows.length) + " sampled rows";
    moreBtn.style.display = matches.length > shown ? "" : "none";
  }
  [q, fSub, fSm, fSt].forEach(function (c) { c.addEventListener(c === q ? "input" : "change", refilter); });
  moreBtn.addEventListener("click", function () { shown += 20; draw(); });
  refilter();

  app.appendChild(el("footer", { text: "Written by tracegen from the run directory alone; self-contained, nothing fetched from the network." }));
  document.body.setAttribute("data-rendered", "1");
})();
