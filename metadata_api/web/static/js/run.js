// The run page: one chart per metric key (mounted while in view), chart controls kept in the query string,
// live updates pushed by the server (one EventSource), notes and tags, logs, and the artifact views. The rank
// view is the server's (`?rank=N`, default 0; `?rank=all` overlays the ranks in `data.ranks`, one line each).
import { api, element, hook, keepStateOnSubmit, pageData, readState, writeState } from "./common.js";
import { MetricChart, lineColor, observeCharts, seriesBudget, toSeries } from "./chart.js";
import { LogPanel } from "./logs.js";

const data = pageData();
const runPath = `/api/runs/${encodeURIComponent(data.run_id)}`;
const projectQuery = `project=${encodeURIComponent(data.project)}`;
const DEFAULTS = { x: "step", smooth: "0", log: "0", keys: "" };
const state = readState(DEFAULTS);
const FINAL = new Set(["COMPLETED", "FAILED", "DELETED"]);
const overlay = data.rank === "all";
const view = overlay ? null : data.rank || 0; // the one rank drawn, or null for the overlay
const overlaid = overlay ? [...data.ranks] : []; // the overlay's ranks, in the order of its lines
const rankQuery = view ? `&rank=${view}` : ""; // rank 0 asks exactly as before ranks existed

function seriesSource(key) {
  if (overlay) return overlaySource(key);
  const path = `${runPath}/metrics/${encodeURIComponent(key)}?${projectQuery}${rankQuery}`;
  const label = data.rank_picker ? `rank ${view}` : key;
  const load = async (query) => {
    const body = await api(`${path}&${query}`);
    return [toSeries(label, "#0b5cad", body.points, body.reduced)];
  };
  return {
    full: (maxPoints) => load(`max_points=${maxPoints}`),
    range: (maxPoints, [range]) => load(`max_points=${maxPoints}&min_step=${range[0]}&max_step=${range[1]}`),
  };
}

/** Every overlaid rank's series of `key`: one /api/compare call for the whole view, one series call a rank for a
 * zoomed range (the compare route reads no step range). */
function overlaySource(key) {
  const path = `${runPath}/metrics/${encodeURIComponent(key)}?${projectQuery}`;
  return {
    async full(maxPoints) {
      const ranks = overlaid.slice();
      const query = `runs=${encodeURIComponent(data.run_id)}&keys=${encodeURIComponent(key)}&ranks=${ranks.join(",")}` +
        `&align=step&max_points=${seriesBudget(maxPoints, ranks.length)}&${projectQuery}`;
      const body = await api(`/api/compare?${query}`);
      return ranks.map((rank, index) => {
        const found = body.series.find((s) => s.rank === rank && s.key === key);
        return toSeries(`rank ${rank}`, lineColor(index), found ? found.points : [], found && found.reduced);
      });
    },
    range(maxPoints, ranges) {
      const ranks = overlaid.slice();
      const budget = seriesBudget(maxPoints, ranks.length);
      return Promise.all(ranks.map(async (rank, index) => {
        const range = ranges[index];
        if (!range) return toSeries(`rank ${rank}`, lineColor(index), [], false); // no line of this rank
        const body = await api(`${path}&rank=${rank}&max_points=${budget}&min_step=${range[0]}&max_step=${range[1]}`);
        return toSeries(`rank ${rank}`, lineColor(index), body.points, body.reduced);
      }));
    },
  };
}

function chartOptions() {
  return { x: state.x, smooth: Number(state.smooth), log: state.log === "1" };
}

const charts = new Map();
for (const figure of document.querySelectorAll("figure.chart")) {
  charts.set(figure.dataset.key, new MetricChart(figure, seriesSource(figure.dataset.key), chartOptions()));
}
const observer = observeCharts([...charts.values()]);

// --- controls ---
const controls = document.getElementById("chart-controls");
const smoothOutput = document.getElementById("c-smooth-value");
controls.x.value = state.x;
controls.smooth.value = state.smooth;
smoothOutput.textContent = Number(state.smooth).toFixed(2);
controls.log.checked = state.log === "1";
controls.keys.value = state.keys;

function filterKeys() {
  const wanted = state.keys.trim().toLowerCase();
  for (const [key, chart] of charts) chart.figure.classList.toggle("filtered-out", Boolean(wanted) && !key.includes(wanted));
  for (const group of document.querySelectorAll(".chart-group")) {
    group.hidden = !group.querySelector("figure.chart:not(.filtered-out)");
  }
}

controls.addEventListener("input", () => {
  state.x = controls.x.value;
  state.smooth = controls.smooth.value;
  state.log = controls.log.checked ? "1" : "0";
  state.keys = controls.keys.value;
  smoothOutput.textContent = Number(state.smooth).toFixed(2);
  writeState(state, DEFAULTS);
  filterKeys();
  for (const chart of charts.values()) chart.setOptions(chartOptions());
});
controls.addEventListener("submit", (event) => event.preventDefault());
filterKeys();
keepStateOnSubmit(document.getElementById("rank-form"), { rank: "0" });

// --- a key that appears while the page is open gets its chart ---
function groupOf(key) {
  const cut = key.indexOf("_");
  return cut > 0 ? key.slice(0, cut) : "other";
}

function addChart(key) {
  const name = groupOf(key);
  let group = document.querySelector(`.chart-group[data-group="${CSS.escape(name)}"]`);
  if (!group) {
    group = element("details", null, "chart-group");
    group.open = true;
    group.dataset.group = name;
    group.append(element("summary", name), element("div", null, "charts"));
    document.getElementById("chart-groups").append(group);
  }
  const figure = element("figure", null, "chart");
  figure.dataset.key = key;
  figure.append(element("figcaption", key), element("div", null, "plot"), element("p", null, "chart-note"));
  group.querySelector(".charts").append(figure);
  const chart = new MetricChart(figure, seriesSource(key), chartOptions());
  charts.set(key, chart);
  observer.add(chart);
  filterKeys();
}

// --- live: one EventSource while the run can still change ---
const logs = new LogPanel(document.getElementById("log-lines"), document.getElementById("log-controls"),
  `${runPath}/logs?${projectQuery}`);
logs.load();

function showStatus(event) {
  const badge = element("span", event.status, `status status-${event.status.toLowerCase()}`);
  document.getElementById("run-status").replaceChildren(badge);
  const duration = document.querySelector("#run-duration .live-duration");
  if (duration && event.end_time) duration.dataset.end = event.end_time;
  if (event.end_time) {
    const time = element("time", event.end_time.replace("T", " ").replace("Z", " UTC"));
    time.setAttribute("datetime", event.end_time);
    document.getElementById("run-end").replaceChildren(time);
  }
  if (event.last_heartbeat) document.getElementById("run-heartbeat").setAttribute("datetime", event.last_heartbeat);
}

/** New points of one rank: drawn in its line (the overlay's line of that rank); a new key gets its chart, and a
 * rank new to the overlay its line in every chart (while the overlay has room: data.max_overlay). */
function showPoints(rank, series) {
  hook.events.push({ type: "points", at: performance.now(), rank, keys: Object.keys(series) });
  let index = 0;
  if (overlay) {
    index = overlaid.indexOf(rank);
    if (index < 0) {
      if (overlaid.length >= data.max_overlay) return;
      overlaid.push(rank); // last: the lines already drawn keep their index
      for (const chart of charts.values()) if (chart.active) chart.reload();
      for (const key of Object.keys(series)) if (!charts.has(key)) addChart(key);
      return;
    }
  }
  for (const [key, rows] of Object.entries(series)) {
    if (!charts.has(key)) { addChart(key); continue; }
    charts.get(key).append(rows.map(([step, value, wall_time]) => ({ step, value, wall_time })), index);
  }
}

function listen() {
  const ranksQuery = overlay ? "&all_ranks=true" : rankQuery;
  const source = new EventSource(`${runPath}/events?${projectQuery}${ranksQuery}` +
    `&cursor=${encodeURIComponent(data.cursor)}`);
  source.addEventListener("points", (message) => {
    const body = JSON.parse(message.data);
    if (body.ranks) for (const [rank, series] of Object.entries(body.ranks)) showPoints(Number(rank), series);
    else showPoints(body.rank, body.series);
  });
  source.addEventListener("logs", (message) => logs.append(JSON.parse(message.data).lines));
  source.addEventListener("reset", () => { for (const chart of charts.values()) if (chart.active) chart.reload(); });
  source.addEventListener("status", (message) => {
    const event = JSON.parse(message.data);
    hook.events.push({ type: "status", at: performance.now(), status: event.status });
    showStatus(event);
    if (FINAL.has(event.status)) source.close();
  });
  hook.eventSource = source;
}
if (!FINAL.has(data.status)) listen();

// --- tags and notes (a write token, or an open server) ---
const writeError = document.getElementById("write-error");

async function write(path, body, done) {
  writeError.hidden = true;
  try {
    done(await api(`${runPath}/${path}?${projectQuery}`, { method: "POST", body }));
  } catch (error) {
    writeError.textContent = error.message;
    writeError.hidden = false;
  }
}

const tagForm = document.getElementById("tag-form");
if (tagForm) {
  tagForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = tagForm.key.value.trim();
    write("tags", { tags: { [key]: tagForm.value.value } }, (run) => {
      const body = document.querySelector("#tags-table tbody");
      body.replaceChildren(...Object.entries(run.tags).map(([name, value]) => {
        const row = element("tr");
        const head = element("th", name);
        head.scope = "row";
        row.append(head, element("td", value));
        return row;
      }));
      tagForm.reset();
    });
  });
}

const noteForm = document.getElementById("note-form");
if (noteForm) {
  noteForm.addEventListener("submit", (event) => {
    event.preventDefault();
    write("notes", { text: noteForm.text.value }, (note) => {
      const item = element("li");
      const time = element("time", note.created_at.slice(0, 16).replace("T", " ") + " UTC");
      time.setAttribute("datetime", note.created_at);
      item.append(time, " ", element("span", note.text, "note-text"));
      document.getElementById("notes").append(item);
      noteForm.reset();
    });
  });
}

if (Object.keys(data.artifacts || {}).length) { // loaded only for a run that has artifacts
  import("./artifacts.js").then((module) => module.showArtifacts(data.artifacts, runPath, projectQuery));
}
