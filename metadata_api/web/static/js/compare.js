// The compare page: every shared key with the runs overlaid (aligned by step or by time since each run's first
// point), zoom per run at full resolution, and a parallel-coordinates drawing of the differing numeric params
// against the chosen final metric. With `ranks=` (a list, or all) each chosen rank of each run is a line of its
// own, labelled `<run> rank <N>`, in shades of the run's colour.
import { api, keepStateOnSubmit, pageData, readState, writeState } from "./common.js";
import { MetricChart, observeCharts, seriesBudget, shade, toSeries } from "./chart.js";

const data = pageData();
const runs = data.runs;
const projectPart = data.project ? `&project=${encodeURIComponent(data.project)}` : "";
const DEFAULTS = { x: "step", smooth: "0", log: "0", keys: "" };
const state = readState(DEFAULTS);
if (state.x === "wall") state.x = "relative"; // runs started at different moments overlay by elapsed time

// One line a run and rank (rank 0 of each run by default, labelled by run only).
const lines = runs.flatMap((run) => run.ranks.map((rank, index) => ({
  run, rank,
  label: data.by_rank ? `${run.run_id} rank ${rank}` : run.run_id,
  color: shade(run.color, index, run.ranks.length),
})));
const rankList = [...new Set(lines.map((line) => line.rank))];
const ranksPart = data.by_rank ? `&ranks=${rankList.join(",")}` : "";

function source(key) {
  return {
    async full(maxPoints) {
      const query = `runs=${runs.map((r) => encodeURIComponent(r.run_id)).join(",")}&keys=${encodeURIComponent(key)}` +
        `&align=step&max_points=${seriesBudget(maxPoints, lines.length)}${ranksPart}${projectPart}`;
      const body = await api(`/api/compare?${query}`);
      return lines.map((line) => {
        const found = body.series.find((s) => s.run_id === line.run.run_id && s.key === key && (s.rank ?? 0) === line.rank);
        return toSeries(line.label, line.color, found ? found.points : [], found && found.reduced);
      });
    },
    async range(maxPoints, ranges) {
      const budget = seriesBudget(maxPoints, lines.length);
      return Promise.all(lines.map(async (line, index) => {
        const range = ranges[index];
        if (!range) return toSeries(line.label, line.color, [], false);
        const path = `/api/runs/${encodeURIComponent(line.run.run_id)}/metrics/${encodeURIComponent(key)}` +
          `?project=${encodeURIComponent(line.run.project)}${line.rank ? `&rank=${line.rank}` : ""}` +
          `&max_points=${budget}&min_step=${range[0]}&max_step=${range[1]}`;
        const body = await api(path);
        return toSeries(line.label, line.color, body.points, body.reduced);
      }));
    },
  };
}

const options = () => ({ x: state.x, smooth: Number(state.smooth), log: state.log === "1" });
const charts = [...document.querySelectorAll("figure.chart")].map((figure) =>
  new MetricChart(figure, source(figure.dataset.key), options()));
observeCharts(charts);

const controls = document.getElementById("chart-controls");
controls.x.querySelector('option[value="wall"]').remove();
controls.x.value = state.x;
controls.smooth.value = state.smooth;
controls.log.checked = state.log === "1";
controls.keys.value = state.keys;
const smoothOutput = document.getElementById("c-smooth-value");
smoothOutput.textContent = Number(state.smooth).toFixed(2);

function filterKeys() {
  const wanted = state.keys.trim().toLowerCase();
  for (const chart of charts) chart.figure.classList.toggle("filtered-out", Boolean(wanted) && !chart.key.includes(wanted));
}
controls.addEventListener("input", () => {
  Object.assign(state, { x: controls.x.value, smooth: controls.smooth.value, log: controls.log.checked ? "1" : "0",
    keys: controls.keys.value });
  smoothOutput.textContent = Number(state.smooth).toFixed(2);
  writeState(state, DEFAULTS);
  filterKeys();
  for (const chart of charts) chart.setOptions(options());
});
controls.addEventListener("submit", (event) => event.preventDefault());
filterKeys();
keepStateOnSubmit(document.getElementById("ranks-form"), { ranks: "0" });
keepStateOnSubmit(document.getElementById("metric-form"), { ranks: "0" });

// --- parallel coordinates: one vertical axis per differing numeric param, the final metric last ---
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawParallel() {
  const holder = document.getElementById("parallel-plot");
  const axes = data.axes.map((path) => ({ label: path, value: (run) => run.params[path] }));
  if (data.metric) axes.push({ label: `${data.metric} (final)`, value: (run) => run.final });
  if (axes.length < 1) { holder.textContent = "No numeric param differs between these runs."; return; }
  const width = Math.max(480, 150 * axes.length), height = 300, top = 30, bottom = 30, left = 60;
  const step = axes.length > 1 ? (width - 2 * left) / (axes.length - 1) : 0;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height });
  const scales = axes.map((axis) => {
    const values = runs.map(axis.value).filter((v) => typeof v === "number" && isFinite(v));
    const low = Math.min(...values), high = Math.max(...values);
    const log = values.length > 1 && low > 0 && high / low >= 100; // learning rates and the like
    const t = (v) => (log ? Math.log10(v) : v);
    const span = t(high) - t(low) || 1;
    return { low, high, log, y: (v) => height - bottom - ((t(v) - t(low)) / span) * (height - top - bottom) };
  });
  axes.forEach((axis, i) => {
    const x = left + i * step;
    root.append(svg("line", { x1: x, x2: x, y1: top, y2: height - bottom, class: "axis" }));
    root.append(svg("text", { x, y: top - 12, "text-anchor": "middle" }, axis.label + (scales[i].log ? " (log)" : "")));
    if (isFinite(scales[i].low)) {
      root.append(svg("text", { x: x + 4, y: height - bottom + 14 }, scales[i].low.toPrecision(3)));
      root.append(svg("text", { x: x + 4, y: top + 4 }, scales[i].high.toPrecision(3)));
    }
  });
  for (const run of runs) {
    const points = axes.map((axis, i) => {
      const v = axis.value(run);
      return typeof v === "number" && isFinite(v) ? `${left + i * step},${scales[i].y(v)}` : null;
    }).filter(Boolean);
    const line = svg("polyline", { points: points.join(" "), class: "line", stroke: run.color });
    line.append(svg("title", {}, run.run_id));
    root.append(line);
  }
  holder.replaceChildren(root);
}
drawParallel();
