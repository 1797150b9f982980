/* cloudprof flame graph / differential flame graph: canvas renderer, no dependencies.
   Data: a pre-order call tree (frame ids, child counts, self values per sample type and value set). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cp-data").textContent);
  var info = JSON.parse(document.getElementById("cp-info").textContent);
  var T = data.types.length, SETS = data.sets || 1, N = data.f.length, DIFF = SETS === 2;
  var ROW = 18, FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
  var $ = function (id) { return document.getElementById(id); };

  // --- tree structure -------------------------------------------------------------
  var frame = Int32Array.from(data.f), end = new Int32Array(N), depth = new Int32Array(N), parent = new Int32Array(N);
  (function () {
    var stackNode = [], stackLeft = [];
    for (var i = 0; i < N; i++) {
      while (stackNode.length && stackLeft[stackLeft.length - 1] === 0) { end[stackNode.pop()] = i; stackLeft.pop(); }
      if (stackNode.length) { stackLeft[stackLeft.length - 1]--; parent[i] = stackNode[stackNode.length - 1]; depth[i] = stackNode.length; }
      else { parent[i] = -1; depth[i] = 0; }
      stackNode.push(i); stackLeft.push(data.c[i]);
    }
    while (stackNode.length) { end[stackNode.pop()] = N; stackLeft.pop(); }
  })();
  var maxDepth = 0;
  for (var i0 = 0; i0 < N; i0++) if (depth[i0] > maxDepth) maxDepth = depth[i0];
  var selfv = data.v.map(function (a) { return Float64Array.from(a); });
  var total = selfv.map(function (s) {
    var t = Float64Array.from(s);
    for (var i = N - 1; i > 0; i--) t[parent[i]] += t[i];
    return t;
  });
  var names = data.names, files = data.files, lines = data.lines;

  // --- state --------------------------------------------------------------------------
  var state = { type: 0, set: DIFF ? 1 : 0, focus: 0, mode: "flame", search: "", regex: false, matched: null,
                matchShare: 0, matchFrames: 0, hover: -1, sort: DIFF ? "dtotal" : "self", asc: false, searchError: "" };
  var wanted = info.default_type;
  state.type = Math.max(0, data.types.indexOf(wanted));
  if (data.types.indexOf(wanted) < 0) {
    for (var t0 = 0; t0 < T; t0++) if (data.types[t0].split("/")[0] === "cpu" && grand(t0, state.set)) { state.type = t0; break; }
  }
  function slot(type, set) { return set * T + type; }
  function grand(type, set) { return total[slot(type, set)][0]; }

  // --- formatting ------------------------------------------------------------------
  function unit() { return data.types[state.type].split("/")[1] || ""; }
  function fmt(v, u) {
    u = u || unit();
    if (v === 0) return "0";
    if (u === "nanoseconds") {
      var s = v / 1e9;
      if (s >= 3600) return (s / 3600).toFixed(2) + " h";
      if (s >= 60) return (s / 60).toFixed(2) + " min";
      if (s >= 1) return s.toFixed(2) + " s";
      if (s >= 1e-3) return (s * 1e3).toFixed(1) + " ms";
      return (s * 1e6).toFixed(0) + " µs";
    }
    if (u === "bytes") {
      var k = ["B", "KiB", "MiB", "GiB", "TiB"], n = 0;
      while (v >= 1024 && n < k.length - 1) { v /= 1024; n++; }
      return (n ? v.toFixed(1) : v) + " " + k[n];
    }
    return Math.round(v).toLocaleString("en-US") + (u === "count" ? "" : " " + u);
  }
  function pct(x) { return (x * 100).toFixed(x >= 0.1 || x === 0 ? 1 : 2) + "%"; }
  function pp(x) { var v = Math.abs(x) < 5e-7 ? 0 : x * 100; return (v > 0 ? "+" : v < 0 ? "\u2212" : "\u00b1") + Math.abs(v).toFixed(2) + " pp"; }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); }
  function where(f) { return files[f] ? files[f] + (lines[f] ? ":" + lines[f] : "") : ""; }

  // --- colours ---------------------------------------------------------------------------
  function hash(s) { var h = 2166136261; for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); } return h >>> 0; }
  var warm = new Array(names.length);
  for (var f = 0; f < names.length; f++) {
    var h = hash(names[f]), lib = /site-packages|dist-packages|\/lib\/python\d|<frozen|^<built-?in>|^$/.test(files[f]);
    var r = lib ? 205 + (h % 40) : 225 + (h % 31), g = lib ? 150 + ((h >>> 8) % 70) : 80 + ((h >>> 8) % 120), b = lib ? 40 + ((h >>> 16) % 50) : 30 + ((h >>> 16) % 40);
    warm[f] = "rgb(" + r + "," + g + "," + b + ")";
  }
  warm[0] = "rgb(190,196,204)";
  function share(i, set) { var g = grand(state.type, set); return g ? total[slot(state.type, set)][i] / g : 0; }
  function delta(i) { return share(i, 1) - share(i, 0); }
  var deltaScale = 0.01;
  function computeDeltaScale() {
    var m = 0.01;  // below one percentage point nothing is vivid: noise stays pale
    for (var i = 1; i < N; i++) { var d = Math.abs(delta(i)); if (d > m) m = d; }
    deltaScale = m;
    $("cp-legend-lo").textContent = "shrank \u2212" + (m * 100).toFixed(1); $("cp-legend-hi").textContent = "+" + (m * 100).toFixed(1) + " pp grew";
    $("cp-legend").title = "Colour: change in the frame's share of the whole (target minus base); full colour at " + pp(m).replace(/^[+]/, "") + " or more";
  }
  function diffRGB(i) {
    var d = delta(i), k = Math.min(1, Math.abs(d) / deltaScale);
    if (share(i, 0) === 0 && share(i, 1) > 0) k = 1;  // new in target
    k = Math.sqrt(k);
    var base = [219, 227, 238], to = d >= 0 ? [200, 30, 30] : [29, 78, 216];
    return [0, 1, 2].map(function (c) { return Math.round(base[c] + (to[c] - base[c]) * k); });
  }
  function colour(i) {
    if (state.matched && !state.matched[frame[i]]) return DIFF ? "rgb(236,238,241)" : "rgb(226,228,232)";
    if (state.matched) return DIFF ? rgb(diffRGB(i)) : "rgb(181,23,158)";
    if (DIFF) return i === 0 ? "rgb(190,196,204)" : rgb(diffRGB(i));
    return warm[frame[i]];
  }
  function lightText(i) {  // white labels on dark fills (by perceived luminance)
    if (state.matched && !DIFF) return true;
    if (!DIFF || i === 0) return false;
    var c = diffRGB(i);
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 150;
  }
  function signed(x) { return '<span class="' + (x > 5e-7 ? "pos" : x < -5e-7 ? "neg" : "zero") + '">' + pp(x) + "</span>"; }
  function rgb(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }

  // --- canvas ------------------------------------------------------------------------
  var canvas = $("cp-canvas"), ctx = canvas.getContext("2d"), graph = $("cp-graph");
  var W = 0, H = 0, dpr = 1, charW = 7, xs = new Float64Array(N), drawn = 0;
  function yOf(d) { return state.mode === "flame" ? H - (d + 1) * ROW : d * ROW; }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    W = Math.max(200, graph.clientWidth - 30);
    H = (maxDepth + 1) * ROW + 2;
    canvas.style.height = H + "px";
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = FONT; charW = ctx.measureText("M").width || 7;
  }
  // x and width of node i in CSS pixels for the current focus, or null when not drawn.
  function layout() {
    var tot = total[slot(state.type, state.set)], F = state.focus, scale = tot[F] ? W / tot[F] : 0;
    xs[F] = 0;
    for (var a = parent[F]; a >= 0; a = parent[a]) xs[a] = 0;
    return { tot: tot, scale: scale };
  }
  function draw() {
    var L = layout(), tot = L.tot, scale = L.scale, F = state.focus;
    ctx.clearRect(0, 0, W, H);
    ctx.font = FONT; ctx.textBaseline = "middle";
    drawn = 0;
    for (var a = parent[F]; a >= 0; a = parent[a]) box(a, 0, W, true);
    var stop = end[F];
    for (var i = F; i < stop;) {
      var w = tot[i] * scale;
      if (w < 0.4) { i = end[i]; continue; }
      box(i, xs[i], w, false);
      var cx = xs[i];
      for (var c = i + 1; c < end[i]; c = end[c]) { xs[c] = cx; cx += tot[c] * scale; }
      i++;
    }
  }
  function box(i, x, w, ancestor) {
    var y = yOf(depth[i]);
    drawn++;
    ctx.fillStyle = colour(i);
    ctx.globalAlpha = ancestor ? 0.6 : 1;
    ctx.fillRect(x, y, Math.max(w - 0.5, 0.5), ROW - 1);
    ctx.globalAlpha = 1;
    if (i === state.hover) { ctx.strokeStyle = "#15202b"; ctx.lineWidth = 1.5; ctx.strokeRect(x + 0.75, y + 0.75, Math.max(w - 2, 1), ROW - 2.5); }
    if (w > 3 * charW) {
      var label = names[frame[i]], max = Math.floor((w - 6) / charW);
      if (label.length > max) label = max > 2 ? label.slice(0, max - 1) + "\u2026" : "";
      if (label) {
        var dark = state.matched && !state.matched[frame[i]];
        ctx.fillStyle = dark ? "#9aa1a9" : lightText(i) ? "#fff" : "#1f2328";
        ctx.fillText(label, x + 3, y + ROW / 2);
      }
    }
  }
  var pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }

  function nodeAt(px, py) {
    var d = state.mode === "flame" ? Math.floor((H - py) / ROW) : Math.floor(py / ROW);
    if (d < 0 || px < 0 || px > W) return -1;
    var F = state.focus;
    if (d < depth[F]) { var a = F; while (depth[a] > d) a = parent[a]; return a; }
    var L = layout(), tot = L.tot, scale = L.scale, node = F, x = 0;
    if (px > tot[F] * scale) return -1;
    while (depth[node] < d) {
      var found = -1, cx = x;
      for (var c = node + 1; c < end[node]; c = end[c]) {
        var w = tot[c] * scale;
        if (px >= cx && px < cx + w) { found = c; break; }
        cx += w;
      }
      if (found < 0 || tot[found] * scale < 0.4) return -1;
      node = found; x = cx;
    }
    return node;
  }
  function rectOf(i) {
    var L = layout(), tot = L.tot, scale = L.scale, F = state.focus;
    if (!(depth[i] < depth[F] ? isAncestor(i, F) : isAncestor(F, i))) return null;
    if (depth[i] <= depth[F]) return { x: 0, y: yOf(depth[i]), w: W, h: ROW - 1 };
    var path = [];
    for (var a = i; a !== F; a = parent[a]) path.push(a);
    var x = 0, node = F;
    for (var k = path.length - 1; k >= 0; k--) {
      for (var c = node + 1; c !== path[k]; c = end[c]) x += tot[c] * scale;
      node = path[k];
    }
    return { x: x, y: yOf(depth[i]), w: tot[i] * scale, h: ROW - 1 };
  }
  function isAncestor(a, i) { return a <= i && i < end[a]; }

  // --- interactions ----------------------------------------------------------------------
  var tip = $("cp-tip");
  function showTip(i, ev) {
    if (i < 0) { tip.style.display = "none"; return; }
    var s = slot(state.type, state.set), f = frame[i], g = grand(state.type, state.set), rows;
    if (DIFF) {
      var b = slot(state.type, 0), t = slot(state.type, 1);
      rows = [["Base total", fmt(total[b][i]) + " (" + pct(share(i, 0)) + ")"],
              ["Target total", fmt(total[t][i]) + " (" + pct(share(i, 1)) + ")"],
              ["Change", signed(delta(i))],
              ["Self base / target", fmt(selfv[b][i]) + " / " + fmt(selfv[t][i])]];
    } else {
      rows = [["Self", fmt(selfv[s][i]) + " (" + pct(g ? selfv[s][i] / g : 0) + ")"],
              ["Total", fmt(total[s][i]) + " (" + pct(g ? total[s][i] / g : 0) + ")"]];
      if (state.focus) rows.push(["Of zoomed", pct(total[s][state.focus] ? total[s][i] / total[s][state.focus] : 0)]);
    }
    tip.innerHTML = '<div class="n">' + esc(names[f]) + "</div>" + (where(f) ? '<div class="f">' + esc(where(f)) + "</div>" : "") +
      "<table>" + rows.map(function (r) { return "<tr><td>" + r[0] + "</td><td>" + r[1] + "</td></tr>"; }).join("") + "</table>";
    tip.style.display = "block";
    var tx = ev.clientX + 14, ty = ev.clientY + 14, tw = tip.offsetWidth, th = tip.offsetHeight;
    if (tx + tw > window.innerWidth - 8) tx = ev.clientX - tw - 14;
    if (ty + th > window.innerHeight - 8) ty = ev.clientY - th - 14;
    tip.style.left = Math.max(4, tx) + "px"; tip.style.top = Math.max(4, ty) + "px";
  }
  function local(ev) { var r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  canvas.addEventListener("mousemove", function (ev) {
    var p = local(ev), i = nodeAt(p[0], p[1]);
    if (i !== state.hover) { state.hover = i; redraw(); }
    showTip(i, ev);
  });
  canvas.addEventListener("mouseleave", function () { state.hover = -1; tip.style.display = "none"; redraw(); });
  canvas.addEventListener("click", function (ev) { var p = local(ev), i = nodeAt(p[0], p[1]); if (i >= 0) zoom(i); });
  document.addEventListener("keydown", function (ev) {
    var inSearch = document.activeElement === $("cp-search");
    if (ev.key === "Escape" && !inSearch) reset();
    if (ev.key === "/" && !inSearch) { ev.preventDefault(); $("cp-search").focus(); }
  });

  function zoom(i) {
    state.focus = i;
    $("cp-reset").disabled = i === 0;
    var crumb = [];
    for (var a = i; a > 0; a = parent[a]) crumb.unshift(names[frame[a]]);
    $("cp-crumb").textContent = crumb.length ? "\u2302 " + crumb.slice(-4).join(" \u203a ") : "";
    $("cp-crumb").title = crumb.join(" \u203a ");
    redraw();
  }
  function reset() { zoom(0); }
  $("cp-reset").addEventListener("click", reset);

  function search(text, regex) {
    state.search = text; state.regex = !!regex; state.searchError = "";
    var box = $("cp-match");
    if (!text) { state.matched = null; state.matchShare = 0; state.matchFrames = 0; box.textContent = ""; box.className = "cp-match"; renderTable(); redraw(); return; }
    var re;
    try { re = regex ? new RegExp(text) : null; } catch (e) { state.searchError = e.message; }
    if (state.searchError) { state.matched = null; box.textContent = "bad regex"; box.className = "cp-match bad"; redraw(); return; }
    var needle = text.toLowerCase(), m = new Uint8Array(names.length), frames = 0;
    for (var f = 1; f < names.length; f++) {
      if (re ? re.test(names[f]) : names[f].toLowerCase().indexOf(needle) >= 0) { m[f] = 1; frames++; }
    }
    state.matched = m; state.matchFrames = frames;
    updateShare();
    renderTable();
    redraw();
  }
  function updateShare() {
    if (!state.matched) return;
    var tot = total[slot(state.type, state.set)], hit = 0, m = state.matched;
    for (var i = 1; i < N;) { if (m[frame[i]]) { hit += tot[i]; i = end[i]; } else i++; }
    state.matchShare = tot[0] ? hit / tot[0] : 0;
    var box = $("cp-match");
    box.textContent = state.matchFrames ? "Matched " + pct(state.matchShare) + " of " + data.types[state.type].split("/")[0] + " \u00b7 " + state.matchFrames + " function" + (state.matchFrames === 1 ? "" : "s") : "No match";
    box.className = "cp-match" + (state.matchFrames ? " hit" : "");
  }
  var timer = 0;
  $("cp-search").addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(function () { search($("cp-search").value, $("cp-regex").checked); }, 120); });
  $("cp-regex").addEventListener("change", function () { search($("cp-search").value, $("cp-regex").checked); });

  var typeSel = $("cp-type");
  data.types.forEach(function (t, k) {
    var has = false;
    for (var s = 0; s < SETS; s++) if (grand(k, s)) has = true;
    if (!has && k !== state.type) return;
    var o = document.createElement("option"); o.value = k; o.textContent = t.split("/")[0] + " (" + t.split("/")[1] + ")";
    typeSel.appendChild(o);
  });
  typeSel.value = state.type;
  typeSel.addEventListener("change", function () { setType(+typeSel.value); });
  function setType(k) {
    if (typeof k === "string") k = data.types.indexOf(k) >= 0 ? data.types.indexOf(k) : data.types.map(function (t) { return t.split("/")[0]; }).indexOf(k);
    if (k < 0 || k >= T) return;
    state.type = k; typeSel.value = k;
    if (DIFF) computeDeltaScale();
    updateShare(); renderTable(); header(); redraw();
  }
  function segmented(id, attr, fn) {
    var el = $(id);
    el.addEventListener("click", function (ev) {
      var b = ev.target.closest("button"); if (!b) return;
      el.querySelectorAll("button").forEach(function (x) { x.classList.toggle("on", x === b); });
      fn(b.getAttribute(attr));
    });
  }
  segmented("cp-mode", "data-mode", function (m) { setMode(m); });
  function setMode(m) {
    state.mode = m === "icicle" ? "icicle" : "flame";
    $("cp-mode").querySelectorAll("button").forEach(function (x) { x.classList.toggle("on", x.getAttribute("data-mode") === state.mode); });
    redraw();
  }
  if (DIFF) {
    $("cp-layout").hidden = false; $("cp-legend").hidden = false;
    segmented("cp-layout", "data-set", function (s) { state.set = +s; if (total[slot(state.type, state.set)][state.focus] === 0) state.focus = 0; zoom(state.focus); updateShare(); });
  }

  // --- top table -----------------------------------------------------------------------
  function stats() {
    var out = {}, onPath = new Int32Array(names.length), path = [];
    var sets = DIFF ? [0, 1] : [state.set];
    for (var i = 0; i < N; i++) {
      while (path.length && end[path[path.length - 1]] <= i) onPath[frame[path.pop()]]--;
      var f = frame[i];
      if (i) {
        var r = out[f] || (out[f] = { f: f, self: [0, 0], total: [0, 0] });
        for (var k = 0; k < sets.length; k++) {
          var s = slot(state.type, sets[k]);
          r.self[k] += selfv[s][i];
          if (!onPath[f]) r.total[k] += total[s][i];
        }
      }
      onPath[f]++; path.push(i);
    }
    var rows = Object.keys(out).map(function (k) { return out[k]; });
    var g0 = grand(state.type, sets[0]) || 1, g1 = DIFF ? grand(state.type, 1) || 1 : 1;
    rows.forEach(function (r) {
      r.selfPct = r.self[0] / g0; r.totalPct = r.total[0] / g0;
      if (DIFF) { r.baseTotal = r.total[0] / g0; r.tgtTotal = r.total[1] / g1; r.dtotal = r.tgtTotal - r.baseTotal; r.dself = r.self[1] / g1 - r.self[0] / g0; }
    });
    return rows.filter(function (r) { return r.total[0] || (DIFF && r.total[1]); });
  }
  var COLS = DIFF ? [["name", "Function"], ["baseTotal", "Base"], ["tgtTotal", "Target"], ["dtotal", "\u0394 total"], ["dself", "\u0394 self"]]
                  : [["name", "Function"], ["self", "Self"], ["selfPct", "Self %"], ["total", "Total"], ["totalPct", "Total %"]];
  var LIMIT = 400, lastRows = [];
  function sortKey(r, k) {
    if (k === "name") return names[r.f].toLowerCase();
    if (k === "self") return r.self[0];
    if (k === "total") return r.total[0];
    if (k === "dtotal" || k === "dself") return Math.abs(r[k]);
    return r[k];
  }
  function renderTable() {
    var rows = stats(), k = state.sort, dir = state.asc ? 1 : -1;
    rows.sort(function (a, b) { var x = sortKey(a, k), y = sortKey(b, k); return x < y ? -dir : x > y ? dir : names[a.f] < names[b.f] ? -1 : 1; });
    lastRows = rows;
    var thead = $("cp-table").tHead;
    thead.innerHTML = "<tr>" + COLS.map(function (c) { return '<th data-k="' + c[0] + '" class="' + (c[0] === k ? "sorted" + (state.asc ? " asc" : "") : "") + '">' + c[1] + "</th>"; }).join("") + "</tr>";
    var m = state.matched, maxPct = 0;
    rows.forEach(function (r) { var p = DIFF ? Math.abs(r.dtotal) : r.selfPct; if (p > maxPct) maxPct = p; });
    var html = rows.slice(0, LIMIT).map(function (r) {
      var cells = DIFF ? [pct(r.baseTotal), pct(r.tgtTotal), signed(r.dtotal), signed(r.dself)]
                       : [r.self[0] ? fmt(r.self[0]) : "\u2013",
                          r.self[0] ? pct(r.selfPct) + '<span class="cp-pct"><i style="width:' + Math.max(1, Math.round(40 * (maxPct ? r.selfPct / maxPct : 0))) + 'px"></i></span>' : "\u2013" + '<span class="cp-pct"></span>',
                          fmt(r.total[0]), pct(r.totalPct)];
      return '<tr data-f="' + r.f + '"' + (m && m[r.f] ? ' class="hit"' : "") + '><td class="fn" title="' + esc(names[r.f] + (where(r.f) ? "\n" + where(r.f) : "")) + '">' + esc(names[r.f]) + (where(r.f) ? "<small>" + esc(where(r.f)) + "</small>" : "") + "</td><td>" + cells.join("</td><td>") + "</td></tr>";
    }).join("");
    $("cp-table").tBodies[0].innerHTML = html;
    $("cp-table-note").textContent = rows.length > LIMIT ? "Showing " + LIMIT + " of " + rows.length.toLocaleString("en-US") + " functions; click a column to sort, a row to search for it." : rows.length + " functions; click a column to sort, a row to search for it.";
  }
  $("cp-table").tHead.addEventListener("click", function (ev) {
    var th = ev.target.closest("th"); if (!th) return;
    sortBy(th.getAttribute("data-k"));
  });
  function sortBy(k, asc) {
    if (asc === undefined) asc = state.sort === k ? !state.asc : k === "name";
    state.sort = k; state.asc = asc; renderTable();
  }
  $("cp-table").tBodies[0].addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr"); if (!tr) return;
    var name = names[+tr.getAttribute("data-f")], pattern = "^" + name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
    $("cp-search").value = pattern; $("cp-regex").checked = true; search(pattern, true);
  });

  // --- header --------------------------------------------------------------------------
  function header() {
    $("cp-title").textContent = info.title || "Flame graph";
    var parts = (info.facts || []).map(function (kv) { return "<span>" + esc(kv[0]) + " <b>" + esc(kv[1]) + "</b></span>"; });
    for (var s = 0; s < SETS; s++) {
      var label = DIFF ? (s ? "target " : "base ") : "";
      parts.push("<span>" + label + esc(data.types[state.type].split("/")[0]) + " <b>" + esc(fmt(grand(state.type, s))) + "</b></span>");
    }
    $("cp-meta").innerHTML = parts.join("");
    $("cp-foot").textContent = (info.footer || "") + " \u00b7 " + N.toLocaleString("en-US") + " frames \u00b7 click a frame to zoom, Esc to reset, / to search";
    if (DIFF) $("cp-table-title").textContent = "Biggest movers (share of " + data.types[state.type].split("/")[0] + ")";
  }

  resize();
  if (DIFF) computeDeltaScale();
  header();
  renderTable();
  draw();
  window.addEventListener("resize", function () { resize(); redraw(); });

  // For tests and scripting: the page's state and actions.
  window.cloudprof = {
    state: state, data: data, info: info, diff: DIFF,
    zoom: zoom, reset: reset, search: search, setType: setType, setMode: setMode, sortBy: sortBy,
    nodeAt: nodeAt, rectOf: rectOf, delta: delta, share: share,
    colourOf: function (i) { return colour(i); },
    findNode: function (name) {  // the widest node of that function
      var best = -1, tot = total[slot(state.type, state.set)];
      for (var i = 1; i < N; i++) if (names[frame[i]] === name && (best < 0 || tot[i] > tot[best])) best = i;
      return best;
    },
    nameOf: function (i) { return names[frame[i]]; },
    tableRows: function () { return lastRows.slice(0, LIMIT).map(function (r) { return names[r.f]; }); },
    drawnFrames: function () { return drawn; },
    timeDraw: function () { var t0 = performance.now(); draw(); return performance.now() - t0; },
    ready: true
  };
})();
