// berth console: live refresh of server-rendered fragments, the log tail
// (server-sent events) and the chart. No third-party code; every request
// goes to the server that served the page.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function poll(el) {
    var url = el.getAttribute("data-refresh");
    var busy = false;
    setInterval(function () {
      if (busy) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.assign("/ui/login"); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          // Server-rendered and escaped by the templates.
          if (html !== null) { el.innerHTML = html; }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, PERIOD_MS);
  }
  document.querySelectorAll("[data-refresh]").forEach(poll);

  var log = document.getElementById("log");
  if (log) {
    var lines = [];
    var events = new EventSource(log.getAttribute("data-src"));
    events.onmessage = function (e) {
      lines.push(e.data);
      if (lines.length > 500) { lines.splice(0, lines.length - 500); }
      log.textContent = lines.join("\n");
      log.scrollTop = log.scrollHeight;
    };
  }

  var chart = document.getElementById("chart");
  if (chart) {
    var NS = "http://www.w3.org/2000/svg";
    var points = [];
    var MAX = 150; // 5 minutes at one point per 2 s
    var W = 600, H = 160, PAD = 8;
    var ready = document.createElementNS(NS, "polyline");
    ready.setAttribute("fill", "none"); ready.setAttribute("stroke", "#1b7f3b"); ready.setAttribute("stroke-width", "2");
    var p50 = document.createElementNS(NS, "polyline");
    p50.setAttribute("fill", "none"); p50.setAttribute("stroke", "#c2570c"); p50.setAttribute("stroke-width", "2");
    chart.appendChild(ready); chart.appendChild(p50);
    var now = document.getElementById("chart-now");
    var line = function (key) {
      var max = 1;
      points.forEach(function (p) { if (p[key] !== null && p[key] > max) { max = p[key]; } });
      max *= 1.1;
      // One sample so far: a short flat line, so that something shows.
      var shown = points.length === 1 ? [points[0], points[0]] : points;
      return shown.map(function (p, i) {
        var x = PAD + (W - 2 * PAD) * i / (MAX - 1);
        var v = p[key] === null ? 0 : p[key];
        var y = H - PAD - (H - 2 * PAD) * v / max;
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    };
    var sample = function () {
      fetch(chart.getAttribute("data-src"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s) { return; }
          points.push({ ready: s.ready, p50: s.p50_ms });
          if (points.length > MAX) { points.shift(); }
          ready.setAttribute("points", line("ready"));
          p50.setAttribute("points", line("p50"));
          if (now) {
            now.textContent = "now: " + s.ready + " ready, " +
              (s.p50_ms === null ? "–" : s.p50_ms.toFixed(1) + " ms");
          }
        })
        .catch(function () {});
    };
    sample();
    setInterval(sample, PERIOD_MS);
  }
})();
