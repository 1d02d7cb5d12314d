// The status page's live updates (serving/protocol/rest/status.py): polls the server's own
// JSON and rewrites the figures and charts in place. No framework, nothing from the network;
// the page is complete without it. Numbers are formatted as the server formats them.
"use strict";
(function () {
  const body = document.body;
  const source = body.dataset.source;
  const interval = Number(body.dataset.interval) || 2000;
  const W = 120, H = 32;

  function fixed(x) { return x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2); }
  function ms(x) { return x == null ? "–" : fixed(x) + " ms"; }
  function rate(x) { return x == null ? "–" : fixed(x) + "/s"; }
  function share(x) { return x == null ? "–" : fixed(x * 100) + " %"; }

  function path(values, top, bottom, log) {
    bottom = bottom || 0;
    if (log) {
      values = values.map(function (v) { return v != null && v > 0 ? Math.log10(v) : null; });
      if (top > 0 && bottom > 0) { top = Math.log10(top); bottom = Math.log10(bottom); }
      else { top = 1; bottom = 0; }
    }
    const range = top > bottom ? top - bottom : 1;
    const step = W / Math.max(values.length - 1, 1);
    const parts = [];
    let penUp = true;
    values.forEach(function (v, i) {
      if (v == null) { penUp = true; return; }
      const y = H - 1 - (H - 2) * Math.min(Math.max((v - bottom) / range, 0), 1);
      parts.push((penUp ? "M" : "L") + (i * step).toFixed(1) + " " + y.toFixed(1));
      penUp = false;
    });
    return parts.join(" ");
  }
  function minOf(values) {
    return values.reduce(function (m, v) { return v != null && v > 0 && (m === 0 || v < m) ? v : m; }, 0);
  }
  function span(t) {
    const seconds = t ? t.points.length * t.step_s : 0;
    return seconds < 120 ? seconds + " s" : Math.floor(seconds / 60) + " min";
  }
  function maxOf(values) {
    return values.reduce(function (m, v) { return v != null && v > m ? v : m; }, 0);
  }

  function set(scope, field, text, warn) {
    scope.querySelectorAll('[data-f="' + field + '"]').forEach(function (el) {
      if (warn) {
        el.replaceChildren();
        const span = document.createElement("span");
        span.className = "warn";
        span.textContent = "⚠ " + text;
        el.appendChild(span);
      } else {
        el.textContent = text;
      }
    });
  }

  function charts(scope, t) {
    const points = t ? t.points : [];
    const p50 = points.map(function (p) { return p.p50_ms; });
    const p99 = points.map(function (p) { return p.p99_ms; });
    const rates = points.map(function (p) { return p.rate; });
    const top = maxOf(p99), bottom = minOf(p50) / 1.5, topRate = maxOf(rates);
    scope.querySelectorAll('svg[data-chart="latency"]').forEach(function (svg) {
      svg.querySelector("path.p50").setAttribute("d", path(p50, top, bottom, true));
      svg.querySelector("path.p99").setAttribute("d", path(p99, top, bottom, true));
      svg.querySelector("title").textContent =
        "p50 (solid) and p99 (dashed) latency, last " + span(t) + ", top " + ms(top) + ", log scale";
    });
    scope.querySelectorAll('svg[data-chart="rate"]').forEach(function (svg) {
      svg.querySelector("path.rate").setAttribute("d", path(rates, topRate, 0, false));
      svg.querySelector("title").textContent = "requests per second, last " + span(t) + ", top " + rate(topRate);
    });
  }

  function splitText(split) {
    const keys = Object.keys(split);
    if (!keys.length) return "no READY version";
    return keys.map(function (v) { return "v" + v + " " + share(split[v]); }).join(" / ");
  }

  function render(doc) {
    const count = doc.models.reduce(function (n, m) { return n + m.versions.length; }, 0);
    const main = document.querySelector("main");
    if (main && Number(main.dataset.versions) !== count) { location.reload(); return; }
    doc.models.forEach(function (m) {
      document.querySelectorAll('[data-model="' + CSS.escape(m.name) + '"]').forEach(function (sec) {
        const mset = function (k, text) {
          sec.querySelectorAll('[data-m="' + k + '"]').forEach(function (el) { el.textContent = text; });
        };
        mset("split", splitText(m.split));
        mset("generation", String(m.generation));
        mset("source", String(m.source));
        if (m.changed_by) mset("changed_by", m.changed_by);
        mset("rate", rate(m.totals.rate));
        mset("error_share", share(m.totals.error_share));
        m.versions.forEach(function (v) {
          sec.querySelectorAll('[data-version="' + CSS.escape(v.version) + '"]').forEach(function (row) {
            const t = v.traffic;
            const errors = t ? t.error_share : null;
            const state = row.querySelector('[data-f="state"]');
            if (state && !state.textContent.endsWith(v.state)) { location.reload(); return; }
            set(row, "role", v.role || "–");
            set(row, "share", share(v.share));
            set(row, "rate", rate(t ? t.rate : null));
            set(row, "error_share", share(errors), errors != null && errors >= 0.01);
            set(row, "p50_ms", ms(t ? t.p50_ms : null));
            set(row, "p99_ms", ms(t ? t.p99_ms : null));
            set(row, "queue_ms", ms(v.stages.queue_ms));
            set(row, "compute_ms", ms(v.stages.compute_ms));
            set(row, "other_ms", ms(v.stages.other_ms));
            set(row, "total_ms", ms(v.stages.total_ms));
            charts(row, t);
          });
        });
        const unrouted = sec.querySelector('[data-version="none"]');
        if (!unrouted && m.unrouted && sec.querySelector("table.versions")) { location.reload(); return; }
        if (unrouted && m.unrouted) {
          set(unrouted, "rate", rate(m.unrouted.rate));
          set(unrouted, "error_share", share(m.unrouted.error_share), m.unrouted.error_share >= 0.01);
        }
        m.shadow.forEach(function (s) {
          const li = sec.querySelector('[data-shadow="' + CSS.escape(s.primary + "-" + s.shadow) + '"]');
          if (!li) return;
          set(li, "agreement", share(s.agreement));
          set(li, "compared", String(s.match + s.mismatch));
          set(li, "error", String(s.error));
          set(li, "rate", rate(s.rate));
          set(li, "p99_ms", ms(s.p99_ms));
        });
      });
    });
    const p = doc.process;
    const when = new Date(doc.generated_at * 1000);
    document.querySelectorAll("[data-process]").forEach(function (el) {
      const k = el.dataset.process;
      if (k === "updated") el.textContent = when.toTimeString().slice(0, 8);
      else if (k === "live") el.textContent = "(live, every " + interval / 1000 + " s)";
      else if (k in p) el.textContent = String(p[k]);
    });
    window.statusData = doc;  // what the page shows now (tests compare the two)
    window.statusRenders = (window.statusRenders || 0) + 1;
  }

  function poll() {
    fetch(source, { headers: { accept: "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () {
        document.querySelectorAll('[data-process="live"]').forEach(function (el) {
          el.textContent = "(server not answering: figures are stale)";
        });
      })
      .finally(function () { setTimeout(poll, interval); });
  }
  poll();
})();
