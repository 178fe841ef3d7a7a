// The dashboard's page: one state object from the server per change (server-sent events), drawn without reload.
// The plot is the figure `hpscan report` draws (hpscan.report.parallel.figure), drawn by the report's own
// parcoords.js; what is brushed stays across updates.
"use strict";

const TOP_ROWS = 15;
const dashboard = { view: null, drawn: null, plot: null, updates: 0, selected: [], chosen: null };
// view: the latest state; drawn: the state the plot was given (it draws at the next animation frame:
// plot.drawn says what the canvas shows)
window.hpscanDashboard = dashboard; // what the browser tests read

const $ = (id) => document.getElementById(id);

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function number(value) {
  return typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(4))) : String(value);
}

function fill(table, rows) {
  // rows: arrays of [text, className?]; replaces the table body
  const body = $(table).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }));
  return body;
}

function showSelection(selected) {
  // selected: the plot's lines inside every brushed range, as indices into the drawn state's trials
  const trials = dashboard.drawn && dashboard.drawn.trials;
  dashboard.selected = trials ? selected : [];
  $("selected").textContent = dashboard.selected.length;
  $("lines").textContent = trials ? trials.ids.length : 0;
  if (!trials) return;
  $("trials").querySelector("thead").replaceChildren(headRow(["#", "trial", dashboard.drawn.metric, "status", ...trials.axes]));
  const best = dashboard.selected.slice(-TOP_ROWS).reverse(); // lines run worst first
  const body = fill("trials", best.map((i, rank) => [
    [String(rank + 1)], [trials.ids[i]], [number(trials.values[i])], [trials.status[i]],
    ...trials.parameters[i].map((v) => [number(v)]),
  ]));
  [...body.children].forEach((row, k) => {
    const id = trials.ids[best[k]];
    row.dataset.trial = id;
    if (id === dashboard.chosen) row.classList.add("chosen");
    row.addEventListener("click", () => showCurve(id));
  });
}

function headRow(names) {
  const tr = document.createElement("tr");
  for (const name of names) {
    const th = document.createElement("th");
    th.textContent = name;
    tr.appendChild(th);
  }
  return tr;
}

let plotlyLoaded = null;
function plotly() {
  // plotly.js (3.5 MB) draws only a trial's curve: loaded on the first click, not with the page
  if (!plotlyLoaded) {
    plotlyLoaded = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "plotly.min.js";
      script.onload = resolve;
      script.onerror = () => {
        plotlyLoaded = null; // the next click tries again
        reject(new Error("plotly.min.js did not load"));
      };
      document.head.appendChild(script);
    });
  }
  return plotlyLoaded;
}

async function showCurve(id) {
  dashboard.chosen = id;
  $("curve-id").textContent = id;
  for (const row of $("trials").querySelectorAll("tbody tr")) row.classList.toggle("chosen", row.dataset.trial === id);
  const curve = await (await fetch(`curve.json?id=${encodeURIComponent(id)}`)).json();
  const names = Object.keys(curve.metrics);
  if (!names.length) {
    if (window.Plotly) Plotly.purge($("curve"));
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = `no per-epoch metrics for this trial (${curve.note})`;
    $("curve").replaceChildren(empty);
    return;
  }
  $("curve").replaceChildren();
  await plotly();
  const traces = names.map((name) => ({ x: curve.epochs, y: curve.metrics[name], name, mode: "lines+markers" }));
  Plotly.react($("curve"), traces, {
    height: 320, margin: { l: 60, r: 20, t: 20, b: 50 },
    xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "metric value" } },
  }, { displaylogo: false });
}

function drawPlot(view) {
  // the trials first: the plot's selection lists them (showSelection)
  dashboard.drawn = view;
  if (dashboard.plot) dashboard.plot.update(view.figure);
  else dashboard.plot = HPScanParcoords.create($("plot"), view.figure, showSelection);
}

function render(view) {
  dashboard.view = view;
  dashboard.updates += 1;
  document.title = `${view.scan}: ${view.recorded}/${view.total} - hpscan`;
  $("scan").textContent = `HPScan ${view.scan}`;
  $("phase").textContent = view.phase;
  $("phase").className = `phase ${view.phase}`;
  $("progress").textContent = `${view.recorded}/${view.total}`;
  $("bar-done").style.width = `${view.total ? (100 * view.recorded) / view.total : 0}%`;
  $("succeeded").textContent = view.succeeded;
  $("pruned").textContent = view.pruned;
  $("failed").textContent = view.failed;
  $("best").textContent = view.best ? `${view.metric} = ${number(view.best.value)} (${view.best.id})` : "-";
  // two leaders whose values overlap within their errors: no winner is named (hpscan.core.ranking)
  $("tied").textContent = view.tied.length > 1 ? `, tied within errors with ${view.tied.length - 1} more` : "";
  $("pareto").textContent = view.pareto.length
    ? `Pareto set (${view.pareto.length}; the "in the Pareto set" axis selects it): ${view.pareto.join(", ")}` : "";
  $("message").textContent = view.message;
  if (view.figure) drawPlot(view);
  fill("sites", view.sites.map((s) => [
    [s.name], [s.backend], [s.state, s.state], [s.reason], [s.message],
    [`${s.running} running, ${s.succeeded} done, ${s.failed} failed`],
  ]));
  fill("shards", view.shards.map((s) => [
    [String(s.index)], [s.site || ""], [s.phase, s.phase], [`${s.done}/${s.total}`], [String(s.attempts)],
    [String(s.moves)], [[s.reason, s.message].filter(Boolean).join(": ")],
  ]));
  fill("failures", view.failed_trials.map((t) => [[t.id], [String(t.shard)], [t.error]]));
  tick();
}

function tick() {
  const view = dashboard.view;
  if (!view) return;
  const ended = ["Succeeded", "Failed"].includes(view.phase);
  if (ended) $("eta").textContent = "done";
  else if (view.eta_seconds === null) $("eta").textContent = "-:--:--";
  else {
    // the estimate counts down between records; past zero, the next record is late
    const left = view.eta_seconds - (Date.now() / 1000 - view.at);
    $("eta").textContent = left >= 0 ? clock(left) : `overdue by ${clock(-left)}`;
  }
}

// relative URLs: the page may be served below a prefix (a scan of the chart's index, an API server's proxy)
const events = new EventSource("events");
events.onopen = () => $("live").classList.add("on");
events.onerror = () => $("live").classList.remove("on");
events.onmessage = (event) => {
  $("problem").textContent = "";
  render(JSON.parse(event.data));
};
events.addEventListener("problem", (event) => {
  $("problem").textContent = `cannot read the scan (showing what was last read): ${JSON.parse(event.data).error}`;
});
setInterval(tick, 1000);
