"use strict";
// heaptrace HTML report: an icicle graph of memory by traceback, a sortable
// table of the top sites and, for a series, a timeline.  Everything it needs
// is in the JSON block "heaptrace-data"; it loads nothing from the network.
(function () {
  var started = performance.now();
  var data = JSON.parse(document.getElementById("heaptrace-data").textContent);
  var ROW = 18;        // pixels per row of the graph
  var MIN_WIDTH = 1.5; // frames narrower than this are not drawn (nor their callees)

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function fmtSize(bytes, sign) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], value = bytes, unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
    var plus = sign && bytes > 0 ? "+" : "";
    return plus + (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[unit];
  }
  function fmtCount(n, sign) { return (sign && n > 0 ? "+" : "") + n.toLocaleString("en-US"); }
  function pct(part, whole) { return whole ? (100 * part / whole).toFixed(1) + "%" : "-"; }

  var frames = data.frames;   // [file index, line, function name or null]
  var files = data.files;
  function frameWhere(f) { return files[frames[f][0]] + ":" + frames[f][1]; }
  function frameLabel(f) {
    if (f < 0) return "all";
    var fr = frames[f], file = files[fr[0]], parts = file.split("/");
    var where = parts.slice(-2).join("/") + ":" + fr[1];
    return fr[2] ? fr[2] + " (" + where + ")" : where;
  }
  function hash(text) {
    var h = 0;
    for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
    return Math.abs(h);
  }

  // --- the icicle graph --------------------------------------------------
  function Flame(container, tree, opts) {
    var n = tree.p.length, kids = new Array(n), sorted = new Uint8Array(n);
    for (var i = 1; i < n; i++) {
      var p = tree.p[i];
      (kids[p] || (kids[p] = [])).push(i);
    }
    function children(i) {
      var list = kids[i];
      if (!list) return [];
      if (!sorted[i]) { list.sort(function (a, b) { return tree.v[b] - tree.v[a]; }); sorted[i] = 1; }
      return list;
    }
    var self = this, focus = 0, matchFrames = null, matchNodes = null;
    var colorCache = {};
    function color(i) {
      if (tree.d) {   // a diff: red grows, blue shrinks, paler for mixed
        var ratio = tree.v[i] ? tree.d[i] / tree.v[i] : 0;
        var light = Math.round(88 - 26 * Math.min(1, Math.abs(ratio)));
        return ratio >= 0 ? "hsl(0, 80%, " + light + "%)" : "hsl(215, 80%, " + light + "%)";
      }
      var f = tree.f[i];
      if (f < 0) return "#cfd8dc";
      var file = frames[f][0];
      if (!(file in colorCache)) {
        var h = hash(files[file]);
        colorCache[file] = "hsl(" + (10 + h % 45) + ", " + (70 + h % 25) + "%, " + (62 + (h >> 3) % 14) + "%)";
      }
      return colorCache[file];
    }
    this.tree = tree;
    this.focus = function () { return focus; };
    this.zoom = function (i) { focus = i; self.render(); if (opts.onZoom) opts.onZoom(i); };
    this.render = function () {
      var width = container.clientWidth || 1000, out = document.createDocumentFragment();
      var path = [];
      for (var a = focus; a !== 0; a = tree.p[a]) path.push(a);
      path.push(0);
      path.reverse();
      var depth = 0, maxDepth = 0, drawn = 0;
      function add(i, x, w, row, above) {
        var div = el("div", "fr" + (above ? " above" : "") +
                     (matchNodes && matchNodes[i] ? " match" : "") +
                     (matchNodes && !matchNodes[i] && !above ? " dim" : ""));
        div.style.left = x.toFixed(1) + "px";
        div.style.top = (row * ROW) + "px";
        div.style.width = w.toFixed(1) + "px";
        div.style.background = color(i);
        div.dataset.i = i;
        if (w > 28) div.textContent = frameLabel(tree.f[i]);
        out.appendChild(div);
        drawn++;
        if (row > maxDepth) maxDepth = row;
      }
      for (var k = 0; k < path.length; k++) add(path[k], 0, width, depth++, path[k] !== focus);
      var total = tree.v[focus];
      if (total > 0) {
        var scale = width / total;
        var stack = [[focus, 0, depth - 1]];
        while (stack.length) {
          var top = stack.pop(), x = top[1], list = children(top[0]);
          for (var c = 0; c < list.length; c++) {
            var w = tree.v[list[c]] * scale;
            if (w < MIN_WIDTH) break;   // sorted: the rest are narrower
            add(list[c], x, w, top[2] + 1, false);
            stack.push([list[c], x, top[2] + 1]);
            x += w;
          }
        }
      }
      container.replaceChildren(out);
      container.style.height = ((maxDepth + 1) * ROW) + "px";
      container.dataset.drawn = drawn;
    };
    this.search = function (term) {
      term = term.trim().toLowerCase();
      if (!term) { matchFrames = matchNodes = null; self.render(); return null; }
      matchFrames = new Uint8Array(frames.length);
      for (var f = 0; f < frames.length; f++)
        if (frameLabel(f).toLowerCase().indexOf(term) >= 0 || frameWhere(f).toLowerCase().indexOf(term) >= 0)
          matchFrames[f] = 1;
      matchNodes = new Uint8Array(n);
      var under = new Uint8Array(n), matched = 0;
      for (var i = 1; i < n; i++) {   // parents come before their children
        var hit = matchFrames[tree.f[i]];
        if (hit) matchNodes[i] = 1;
        if (hit && !under[tree.p[i]]) matched += tree.v[i];
        under[i] = under[tree.p[i]] || hit;
      }
      self.render();
      return matched;
    };
    container.addEventListener("click", function (event) {
      var target = event.target.closest(".fr");
      if (target) self.zoom(+target.dataset.i);
    });
    var tip = $("tip");
    container.addEventListener("mousemove", function (event) {
      var target = event.target.closest(".fr");
      if (!target) { tip.style.display = "none"; return; }
      var i = +target.dataset.i, f = tree.f[i];
      tip.replaceChildren();
      tip.appendChild(el("b", null, frameLabel(f)));
      if (f >= 0) tip.appendChild(el("div", null, frameWhere(f)));
      tip.appendChild(el("div", null, opts.describe(i)));
      tip.style.display = "block";
      tip.style.left = Math.min(event.clientX + 12, window.innerWidth - 420) + "px";
      tip.style.top = (event.clientY + 14) + "px";
    });
    container.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  }

  function setupFlame(tree, describe) {
    var container = $("flame");
    var flame = new Flame(container, tree, {
      describe: describe,
      onZoom: function (i) {
        var names = [];
        for (var a = i; a !== 0; a = tree.p[a]) names.push(frameLabel(tree.f[a]));
        $("zoom-path").textContent = names.length ? "Zoomed into: " + names.reverse().join(" \u2192 ") : "";
        $("zoom-path").dataset.frame = i ? frameWhere(tree.f[i]) : "";
        $("reset").disabled = i === 0;
      }
    });
    $("reset").addEventListener("click", function () { flame.zoom(0); });
    $("reset").disabled = true;
    var timer = null;
    $("search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var matched = flame.search($("search").value);
        $("search-result").textContent = matched === null ? "" :
          "matched " + fmtSize(matched) + " (" + pct(matched, tree.v[0]) + ")";
      }, 120);
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(flame.render, 100);
    });
    flame.render();
    window.heaptraceFlame = flame;
    return flame;
  }

  // --- the sortable table -------------------------------------------------
  function setupTable(table, columns, rows, onRow) {
    var head = el("tr"), body = el("tbody"), sortKey = null, desc = true;
    columns.forEach(function (col) {
      var th = el("th", null, col.title);
      th.dataset.key = col.key;
      if (col.help) th.title = col.help;
      th.addEventListener("click", function () {
        desc = sortKey === col.key ? !desc : !col.text;
        sortKey = col.key;
        draw();
      });
      head.appendChild(th);
    });
    var thead = el("thead");
    thead.appendChild(head);
    table.replaceChildren(thead, body);
    function draw() {
      if (sortKey !== null) {
        var col = columns.filter(function (c) { return c.key === sortKey; })[0];
        rows.sort(function (a, b) {
          var x = col.value(a), y = col.value(b), order = x < y ? -1 : x > y ? 1 : 0;
          return desc ? -order : order;
        });
      }
      Array.prototype.forEach.call(head.children, function (th) {
        th.className = th.dataset.key === sortKey ? (desc ? "sorted-desc" : "sorted-asc") : "";
      });
      var out = document.createDocumentFragment();
      rows.forEach(function (row) {
        var tr = el("tr", "site-row");
        columns.forEach(function (col) {
          var td = el("td", col.cls || null);
          if (col.render) td.appendChild(col.render(row));
          else td.textContent = col.show ? col.show(row) : String(col.value(row));
          if (col.color) { var c = col.color(row); if (c) td.classList.add(c); }
          tr.appendChild(td);
        });
        if (onRow) tr.addEventListener("click", function () { onRow(row); });
        out.appendChild(tr);
      });
      body.replaceChildren(out);
    }
    draw();
  }

  function siteName(row) {
    var f = frames[row.frame], parts = files[f[0]].split("/");
    return parts.slice(-2).join("/") + ":" + f[1];
  }
  function searchFor(row) {
    var f = frames[row.frame];
    $("search").value = files[f[0]].split("/").slice(-2).join("/") + ":" + f[1];
    $("search").dispatchEvent(new Event("input"));
    $("flame").scrollIntoView({ block: "nearest" });
  }
  function growthClass(value) { return value > 0 ? "grow" : value < 0 ? "shrink" : null; }

  var siteColumn = { key: "site", title: "Site", text: true, cls: "site", value: siteName };
  var funcColumn = { key: "func", title: "Function", text: true, cls: "site",
                     value: function (r) { return frames[r.frame][2] || ""; } };
  var srcColumn = { key: "src", title: "Source line", text: true, cls: "src",
                    value: function (r) { return r.src || ""; } };

  function snapshotPage() {
    var tree = data.tree, total = tree.v[0];
    setupFlame(tree, function (i) {
      return fmtSize(tree.v[i]) + " (" + pct(tree.v[i], total) + ") in " + fmtCount(tree.n[i]) + " blocks";
    });
    setupTable($("sites"), [
      siteColumn, funcColumn,
      { key: "size", title: "Size", cls: "num", help: "bytes allocated by this line itself",
        value: function (r) { return r.size; }, show: function (r) { return fmtSize(r.size); } },
      { key: "pct", title: "%", cls: "num", value: function (r) { return r.size; },
        show: function (r) { return pct(r.size, total); } },
      { key: "count", title: "Blocks", cls: "num", value: function (r) { return r.count; },
        show: function (r) { return fmtCount(r.count); } },
      { key: "cum", title: "With callees", cls: "num",
        help: "bytes allocated by this line and by everything it called",
        value: function (r) { return r.cum; }, show: function (r) { return fmtSize(r.cum); } },
      srcColumn
    ], data.sites, searchFor);
  }

  function diffPage() {
    var tree = data.tree;
    setupFlame(tree, function (i) {
      return "change " + fmtSize(tree.d[i], true) + " (" + fmtCount(tree.dn[i], true) + " blocks), now " +
        fmtSize(tree.s[i]) + " in " + fmtCount(tree.n[i]) + " blocks";
    });
    setupTable($("sites"), [
      siteColumn, funcColumn,
      { key: "diff", title: "Change", cls: "num", value: function (r) { return r.size_diff; },
        show: function (r) { return fmtSize(r.size_diff, true); },
        color: function (r) { return growthClass(r.size_diff); } },
      { key: "cdiff", title: "Blocks change", cls: "num", value: function (r) { return r.count_diff; },
        show: function (r) { return fmtCount(r.count_diff, true); },
        color: function (r) { return growthClass(r.count_diff); } },
      { key: "size", title: "Size now", cls: "num", value: function (r) { return r.size; },
        show: function (r) { return fmtSize(r.size); } },
      srcColumn
    ], data.kind === "series" ? data.growth_sites : data.sites, searchFor);
  }

  var KIND_ORDER = { leak: 0, plateau: 1, noise: 2 };
  var LINE_COLORS = ["#c62828", "#ef6c00", "#6a1b9a", "#2e7d32", "#00838f", "#ad1457", "#4e342e", "#283593"];

  function drawChart(container, series) {
    var NS = "http://www.w3.org/2000/svg", width = Math.max(container.clientWidth || 900, 400);
    var height = 260, left = 70, right = 10, topPad = 10, bottom = 28;
    var times = data.hours, tmax = times[times.length - 1] || 1, ymax = 1;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v > ymax) ymax = v; }); });
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    function line(x1, y1, x2, y2, stroke) {
      var l = document.createElementNS(NS, "line");
      l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
      l.setAttribute("stroke", stroke);
      svg.appendChild(l);
    }
    function text(x, y, value, anchor) {
      var t = document.createElementNS(NS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", "11");
      t.setAttribute("text-anchor", anchor || "start");
      t.textContent = value;
      svg.appendChild(t);
    }
    function X(h) { return left + (width - left - right) * h / tmax; }
    function Y(v) { return topPad + (height - topPad - bottom) * (1 - v / ymax); }
    for (var g = 0; g <= 4; g++) {
      var v = ymax * g / 4;
      line(left, Y(v), width - right, Y(v), "#eee");
      text(left - 4, Y(v) + 4, fmtSize(v), "end");
    }
    line(left, Y(0), width - right, Y(0), "#999");
    text(left, height - 8, "0 s");
    var span = tmax * 3600;
    text(width - right, height - 8, span >= 3600 ? (tmax).toFixed(2) + " h" :
         span >= 60 ? (span / 60).toFixed(1) + " min" : span.toFixed(1) + " s", "end");
    var legend = el("div", "legend");
    series.forEach(function (s, index) {
      var poly = document.createElementNS(NS, "polyline");
      poly.setAttribute("points", s.values.map(function (value, k) {
        return X(times[k]).toFixed(1) + "," + Y(value).toFixed(1);
      }).join(" "));
      poly.setAttribute("fill", "none");
      poly.setAttribute("stroke", s.color);
      poly.setAttribute("stroke-width", index === 0 ? "2.5" : "1.5");
      var title = document.createElementNS(NS, "title");
      title.textContent = s.name;
      poly.appendChild(title);
      svg.appendChild(poly);
      var item = el("div");
      var swatch = el("span", "swatch");
      swatch.style.background = s.color;
      item.appendChild(swatch);
      if (s.kind) item.appendChild(el("span", "kind kind-" + s.kind, s.kind));
      item.appendChild(document.createTextNode(" " + s.name));
      legend.appendChild(item);
    });
    container.replaceChildren(svg, legend);
  }

  function seriesPage() {
    var lines = [{ name: "total traced memory", values: data.totals, color: "#263238" }];
    // The sites worth a line: leaks and plateaus first; the biggest if none.
    var shown = data.sites.filter(function (s) { return s.kind !== "noise"; }).slice(0, 7);
    if (!shown.length)
      shown = data.sites.slice().sort(function (a, b) { return b.last - a.last; }).slice(0, 3);
    shown.forEach(function (site, k) {
      lines.push({ name: siteName(site) + (frames[site.frame][2] ? " " + frames[site.frame][2] : ""),
                   values: site.sizes, color: LINE_COLORS[k], kind: site.kind });
    });
    drawChart($("chart"), lines);
    setupTable($("trend-sites"), [
      { key: "kind", title: "Verdict", text: true, value: function (r) { return KIND_ORDER[r.kind]; },
        render: function (r) { return el("span", "kind kind-" + r.kind, r.kind); } },
      siteColumn, funcColumn,
      { key: "rate", title: "Growth/hour", cls: "num", value: function (r) { return r.slope; },
        show: function (r) { return r.kind === "leak" ? fmtSize(r.slope, true) : "-"; } },
      { key: "growth", title: "Growth", cls: "num", value: function (r) { return r.growth; },
        show: function (r) { return fmtSize(r.growth, true); }, color: function (r) { return growthClass(r.growth); } },
      { key: "size", title: "Size now", cls: "num", value: function (r) { return r.last; },
        show: function (r) { return fmtSize(r.last); } },
      { key: "why", title: "Why", text: true, value: function (r) { return r.reason; },
        show: function (r) { return r.kind === "leak" ? "confidence " + r.confidence.toFixed(2) + ", " + r.reason : r.reason; } }
    ], data.sites, data.tree ? searchFor : null);
    if (data.tree) diffPage();
  }

  try {
    if (data.kind === "snapshot") snapshotPage();
    else if (data.kind === "diff") diffPage();
    else seriesPage();
  } finally {
    document.body.dataset.renderMs = (performance.now() - started).toFixed(1);
    document.body.dataset.ready = "1";
  }
})();
