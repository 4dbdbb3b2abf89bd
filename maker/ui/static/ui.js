// maker ui: live updates over server-sent events, and the plots (uPlot, shipped with the package).
// Fragments come from the server already escaped; this script only swaps them in and sets text.
(function () {
  "use strict";
  const body = document.body;
  const live = document.getElementById("live");
  const mode = body.dataset.live;
  if (!mode) {
    window.addEventListener("load", () => bars(document));
    return;
  }

  // Progress bars: widths set here (the page's content security policy allows no inline style attributes).
  function bars(root) {
    root.querySelectorAll(".bar[data-progress]").forEach((bar) => {
      const span = bar.querySelector("span");
      if (span) span.style.width = Math.max(0, Math.min(100, Number(bar.dataset.progress))) + "%";
    });
  }

  // Each refresh is numbered: an answer to an older one never replaces a newer one's.
  const asked = {};
  async function refresh(el) {
    if (!el) return;
    const n = (asked[el.id] = (asked[el.id] || 0) + 1);
    const r = await fetch(el.dataset.src, { credentials: "same-origin" });
    if (!r.ok) return;
    const html = await r.text();
    if (n !== asked[el.id]) return;
    el.innerHTML = html;
    bars(el);
    el.dataset.updated = String(Date.now());
  }

  const charts = {};
  const colors = ["#0b62c4", "#b42318", "#1a7f37", "#9a6700", "#8250df", "#57606a"];

  function draw(name, x, ys, labels) {
    const el = document.querySelector('[data-chart="' + name + '"]');
    if (!el || typeof uPlot === "undefined") return;
    const have = ys.some((y) => y && y.some((v) => v !== null && v !== undefined));
    if (!have) {
      if (charts[name]) { charts[name].destroy(); delete charts[name]; }
      el.textContent = "";
      const p = document.createElement("div");
      p.className = "empty";
      p.textContent = "nothing to show for this run";
      el.appendChild(p);
      return;
    }
    const data = [x].concat(ys);
    const key = labels.join("|");
    if (charts[name] && charts[name].key === key) {
      charts[name].setData(data);
      return;
    }
    if (charts[name]) charts[name].destroy();
    el.textContent = "";
    const width = Math.max(300, el.clientWidth || 420);
    const opts = {
      width: width, height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }].concat(labels.map((l, i) => ({ label: l, stroke: colors[i % colors.length], width: 1.5, spanGaps: false }))),
      legend: { show: true },
    };
    const plot = new uPlot(opts, data, el);
    plot.key = key;
    charts[name] = plot;
  }

  async function plots() {
    const box = document.getElementById("plots");
    if (!box) return;
    const n = (asked.plots = (asked.plots || 0) + 1);
    const r = await fetch(box.dataset.src, { credentials: "same-origin" });
    if (!r.ok) return;
    const s = await r.json();
    if (n !== asked.plots) return;
    const x = s.step;
    draw("rounds", x, [s.rounds_mean, s.rounds_max], ["mean", "most"]);
    draw("calls", x, [s.calls_per_step], ["calls a step"]);
    const reasons = Object.keys(s.flags);
    draw("flags", x, reasons.map((k) => s.flags[k]), reasons.length ? reasons : ["red flags"]);
    draw("cost", x, [s.cost], ["dollars"]);
    draw("wasted", x, [s.wasted_calls], ["calls"]);
    draw("speed", x, [s.steps_per_s], ["steps/s"]);
    box.dataset.updated = String(Date.now());
  }

  let source = null;
  function connect() {
    const url = mode === "run" ? "/events?run=" + encodeURIComponent(body.dataset.run) : "/events";
    source = new EventSource(url);
    source.addEventListener("open", () => { live.className = "live on"; live.title = "live: updates as the store changes"; });
    source.addEventListener("error", () => { live.className = "live off"; live.title = "not connected; retrying"; });
    // Every change is fetched, the first too: the run may have changed between the page's rendering and the
    // stream's first event, and a run that stopped then sends no other.
    source.addEventListener("change", async (event) => {
      if (body.dataset.reload) {  // a run about to start: its page, once the store has it
        if (event.data !== "null") location.reload();
        return;
      }
      if (mode === "runs") {
        await refresh(document.getElementById("runs-table"));
      } else {
        await refresh(document.getElementById("run-panel"));
        await plots();
      }
      body.dataset.changes = String(Number(body.dataset.changes || 0) + 1);
    });
  }

  window.addEventListener("load", () => {
    bars(document);
    if (mode === "run" && !body.dataset.reload) plots();
    connect();
  });
})();
