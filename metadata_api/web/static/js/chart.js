// One chart of one metric key, drawn with uPlot: one series per run, x by step, wall time or time since the
// run's first point, EMA smoothing (TensorBoard's, debiased), log scale, NaN/±Inf drawn as markers (▲ +Inf at
// the top, ▼ -Inf at the bottom, × NaN at the top) instead of gaps. Data comes M4-reduced to 4 points per pixel
// of width; a drag-selected zoom refetches that step range at full resolution (or reduced again when it still
// holds more), a double click goes back to the whole series.
import { decodeValue, formatDuration, hook } from "./common.js";

const HEIGHT = 200;
const MARKER_SIZE = 5;
const PARALLEL_LOADS = 2; // charts loading at once: the first one paints sooner than if all shared the server

let loading = 0;
const waiting = [];

/** Run `task` when fewer than PARALLEL_LOADS chart loads are running. */
async function limited(task) {
  if (loading >= PARALLEL_LOADS) await new Promise((resolve) => waiting.push(resolve));
  loading++;
  try {
    return await task();
  } finally {
    loading--;
    if (waiting.length) waiting.shift()();
  }
}

/** TensorBoard's smoothing: an exponential moving average, debiased; non-finite values pass through as gaps. */
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0;
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (value === null || !isFinite(value)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * value;
    count++;
    out[i] = last / (1 - Math.pow(weight, count));
  }
  return out;
}

/** API points -> a series: arrays of steps, values (NaN/±Inf kept) and wall times. */
export function toSeries(label, color, points, reduced) {
  return {
    label, color, reduced: Boolean(reduced),
    steps: points.map((p) => p.step),
    values: points.map((p) => decodeValue(p.value)),
    walls: points.map((p) => p.wall_time),
  };
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22"];

function hex(r, g, b) {
  return "#" + [r, g, b].map((c) => Math.round(Math.min(255, Math.max(0, c))).toString(16).padStart(2, "0")).join("");
}

/** The colour of line `index` of an overlay (one line per rank): the palette, then hues a golden angle apart. */
export function lineColor(index) {
  if (index < PALETTE.length) return PALETTE[index];
  const hue = (index * 137.508) % 360, s = 0.65, l = 0.42;
  const f = (n) => { const k = (n + hue / 30) % 12; return l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
  return hex(255 * f(0), 255 * f(8), 255 * f(4));
}

/** Line `index` of `count` lines of one run (its ranks): the run's colour, darker to lighter. */
export function shade(color, index, count) {
  if (count < 2) return color;
  const t = (index / (count - 1)) * 0.7 - 0.35; // -0.35 (towards black) .. +0.35 (towards white)
  const n = parseInt(color.slice(1), 16);
  const mix = (c) => (t < 0 ? c * (1 + t) : c + (255 - c) * t);
  return hex(mix((n >> 16) & 255), mix((n >> 8) & 255), mix(n & 255));
}

/** Points a series of a chart of `count` lines asks for: the chart's whole budget up to 8 lines, then less (at
 * least one point a pixel: M4 still keeps each bucket's min and max), so 64 lines cost 8 charts, not 64. */
export function seriesBudget(maxPoints, count) {
  return count <= 8 ? maxPoints : Math.max(Math.floor(maxPoints / 4), Math.floor((maxPoints * 8) / count));
}

function withAlpha(color, alpha) {
  const n = parseInt(color.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

/** Index of the first element of sorted `xs` that is >= x. */
function lowerBound(xs, x) {
  let lo = 0, hi = xs.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

export class MetricChart {
  /**
   * @param figure a `figure.chart` with a `.plot` and a `.chart-note`
   * @param source `{full(maxPoints), range(maxPoints, stepRanges)}`, each resolving to a list of series
   * @param options `{x: "step"|"wall"|"relative", smooth: 0..0.99, log: bool}`
   */
  constructor(figure, source, options) {
    this.figure = figure;
    this.key = figure.dataset.key;
    this.source = source;
    this.options = { x: "step", smooth: 0, log: false, ...options };
    this.plotElement = figure.querySelector(".plot");
    this.note = figure.querySelector(".chart-note");
    this.plot = null;
    this.full = null; // the series of the whole range (what a double click returns to)
    this.shown = null; // the series drawn now (the zoomed range's when zoomed)
    this.zoom = null; // [xMin, xMax] while zoomed
    this.active = false;
    this.generation = 0; // bumped by unmount and by each new fetch: late answers are dropped
    this.paints = 0;
    hook.controls = hook.controls || {};
    hook.controls[this.key] = this; // tests zoom through it (the same path as a drag)
  }

  width() { return Math.max(240, Math.floor(this.plotElement.clientWidth || 480)); }
  maxPoints() { return 4 * this.width(); }

  async mount() {
    if (this.active) return;
    this.active = true;
    await this.reload();
  }

  async reload() {
    const generation = ++this.generation;
    try {
      const series = await limited(() => (generation === this.generation ? this.source.full(this.maxPoints()) : null));
      if (generation !== this.generation || !this.active || !series) return;
      this.full = series;
      this.zoom = null;
      this.draw(series);
    } catch (error) {
      if (generation === this.generation) this.note.textContent = "could not load: " + error.message;
    }
  }

  unmount() {
    this.active = false;
    this.generation++;
    if (this.plot) this.plot.destroy();
    this.plot = this.full = this.shown = this.zoom = this.shape = null;
    delete hook.charts[this.key];
  }

  setOptions(options) {
    const xChanged = options.x !== undefined && options.x !== this.options.x;
    Object.assign(this.options, options);
    if (!this.shown) return;
    if (xChanged && this.zoom) { this.zoom = null; this.draw(this.full); } else this.draw(this.shown);
  }

  /** New points of series `index` (live updates); a zoomed view stays as it is until the zoom is reset. */
  append(points, index = 0) {
    const series = this.full && this.full[index];
    if (!series) return;
    for (const point of points) {
      const at = lowerBound(series.steps, point.step);
      const value = decodeValue(point.value);
      if (series.steps[at] === point.step) { series.values[at] = value; series.walls[at] = point.wall_time; continue; }
      series.steps.splice(at, 0, point.step);
      series.values.splice(at, 0, value);
      series.walls.splice(at, 0, point.wall_time);
    }
    if (this.zoom) return;
    if (series.steps.length > 2 * this.maxPoints()) this.reload(); // reduce again, server side
    else this.draw(this.full);
  }

  xsOf(series) {
    if (this.options.x === "step") return series.steps;
    if (this.options.x === "wall") return series.walls;
    const origin = series.walls.length ? series.walls[0] : 0;
    return series.walls.map((w) => w - origin);
  }

  /** uPlot's data: [xs, ys of each series (and its smoothed line)], aligned on the union of the x values. */
  buildData(seriesList) {
    const tables = [];
    const markers = [];
    const smooth = Number(this.options.smooth) || 0;
    seriesList.forEach((series, index) => {
      let xs = this.xsOf(series);
      let values = series.values;
      if (this.options.x !== "step") { // wall times may repeat or go back (a resumed run): sort, keep the last
        const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b] || a - b);
        const keep = order.filter((i, k) => k === order.length - 1 || xs[order[k + 1]] !== xs[i]);
        xs = keep.map((i) => xs[i]);
        values = keep.map((i) => values[i]);
      }
      const ys = values.map((v) => (!isFinite(v) || (this.options.log && v <= 0) ? null : v));
      values.forEach((v, i) => {
        if (!isFinite(v)) markers.push({ x: xs[i], kind: isNaN(v) ? "nan" : v > 0 ? "pos" : "neg", series: index });
      });
      const table = [xs, ys];
      if (smooth > 0) table.push(ema(ys, smooth));
      tables.push(table);
    });
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    return { data, markers };
  }

  draw(seriesList) {
    this.shown = seriesList;
    const { data, markers } = this.buildData(seriesList);
    this.markers = markers;
    const smooth = Number(this.options.smooth) > 0;
    const series = [{ label: { step: "step", wall: "time", relative: "elapsed" }[this.options.x] }];
    for (const s of seriesList) {
      series.push({ label: s.label, stroke: smooth ? withAlpha(s.color, 0.3) : s.color, width: 1, spanGaps: true });
      if (smooth) series.push({ label: s.label + " (smoothed)", stroke: s.color, width: 2, spanGaps: true });
    }
    const shape = JSON.stringify([series.map((s) => [s.label, s.stroke]), this.options]);
    if (this.plot && shape === this.shape) {
      this.plot.setData(data, !this.zoom); // same series and options: new data only
    } else {
      if (this.plot) this.plot.destroy();
      this.plot = new uPlot(this.plotOptions(series), data, this.plotElement);
      this.shape = shape;
    }
    if (this.zoom) this.plot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    this.describe(seriesList, data);
  }

  plotOptions(series) {
    const chart = this;
    const x = { stroke: "#57606a", grid: { stroke: "#eaeef2" } };
    if (this.options.x === "relative") x.values = (u, splits) => splits.map((s) => formatDuration(s));
    return {
      width: this.width(), height: HEIGHT, series,
      scales: { x: { time: this.options.x === "wall" }, y: { distr: this.options.log ? 3 : 1 } },
      axes: [x, { stroke: "#57606a", grid: { stroke: "#eaeef2" }, size: 64 }],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        bind: { dblclick: () => () => { chart.resetZoom(); return null; } },
      },
      hooks: {
        draw: [(u) => chart.drawMarkers(u)],
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const min = u.posToVal(u.select.left, "x");
          const max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          chart.zoomTo(min, max);
        }],
      },
    };
  }

  drawMarkers(u) {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const size = MARKER_SIZE * devicePixelRatio;
    ctx.save();
    for (const marker of this.markers) {
      const x = u.valToPos(marker.x, "x", true);
      if (!(x >= left - 1 && x <= left + width + 1)) continue;
      ctx.fillStyle = ctx.strokeStyle = marker.kind === "nan" ? "#8250df" : "#b42318";
      ctx.lineWidth = 2 * devicePixelRatio;
      ctx.beginPath();
      if (marker.kind === "pos") { ctx.moveTo(x, top); ctx.lineTo(x - size, top + 2 * size); ctx.lineTo(x + size, top + 2 * size); ctx.fill(); }
      else if (marker.kind === "neg") { const y = top + height; ctx.moveTo(x, y); ctx.lineTo(x - size, y - 2 * size); ctx.lineTo(x + size, y - 2 * size); ctx.fill(); }
      else { const y = top + size + 1; ctx.moveTo(x - size, y - size); ctx.lineTo(x + size, y + size); ctx.moveTo(x + size, y - size); ctx.lineTo(x - size, y + size); ctx.stroke(); }
    }
    ctx.restore();
    this.paints++;
    if (hook.firstPaint === null) hook.firstPaint = performance.now();
    if (hook.charts[this.key]) hook.charts[this.key].paints = this.paints;
  }

  /** Zoom on [min, max] of the x axis: at once on what is drawn, then with the range's own points. */
  async zoomTo(min, max) {
    if (!this.plot || !(max > min)) return;
    this.zoom = [min, max];
    this.plot.setScale("x", { min, max });
    const ranges = this.shown.map((series) => this.stepRange(series, min, max));
    this.ranges = ranges;
    const generation = ++this.generation;
    try {
      const series = await this.source.range(this.maxPoints(), ranges);
      if (generation !== this.generation || !this.active) return;
      this.draw(series);
    } catch (error) {
      this.note.textContent = "could not load the zoomed range: " + error.message;
    }
  }

  /** The steps of `series` whose x lies in [min, max], widened by one point each side (lines reach the edges);
   * null when it has none. */
  stepRange(series, min, max) {
    if (!series.steps.length) return null; // a line with no points (a rank without this key) has nothing to fetch
    if (this.options.x === "step") return [Math.max(0, Math.floor(min)), Math.ceil(max)];
    const xs = this.xsOf(series);
    if (!xs.length) return null;
    let first = xs.findIndex((x) => x >= min);
    let last = xs.length - 1 - [...xs].reverse().findIndex((x) => x <= max);
    if (first < 0 || last >= xs.length) return null;
    first = Math.max(0, first - 1);
    last = Math.min(xs.length - 1, last + 1);
    return [Math.min(series.steps[first], series.steps[last]), Math.max(series.steps[first], series.steps[last])];
  }

  resetZoom() {
    if (!this.full) return;
    this.generation++;
    this.zoom = null;
    this.draw(this.full);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: HEIGHT });
  }

  describe(seriesList, data) {
    const counts = { nan: 0, pos: 0, neg: 0 };
    for (const marker of this.markers) counts[marker.kind]++;
    const parts = [];
    if (counts.nan) parts.push(`${counts.nan} NaN (×)`);
    if (counts.pos) parts.push(`${counts.pos} +Inf (▲)`);
    if (counts.neg) parts.push(`${counts.neg} -Inf (▼)`);
    const hidden = this.options.log ? seriesList.reduce((n, s) => n + s.values.filter((v) => v <= 0).length, 0) : 0;
    if (hidden) parts.push(`${hidden} values ≤ 0 not shown on the log scale`);
    const reduced = seriesList.some((s) => s.reduced);
    if (this.zoom) parts.push("zoomed: double-click to reset");
    else if (reduced) parts.push("reduced (min/max kept): drag to zoom");
    this.note.textContent = parts.join(" · ");
    this.note.classList.toggle("nonfinite", counts.nan + counts.pos + counts.neg > 0);
    hook.charts[this.key] = {
      key: this.key, zoom: this.zoom, ranges: this.zoom ? this.ranges : null, width: this.width(),
      maxPoints: this.maxPoints(), paints: this.paints,
      points: data[0].length,
      series: seriesList.map((s) => ({ label: s.label, reduced: s.reduced, steps: s.steps.slice(), values: s.values.slice() })),
    };
  }
}

/** Mount charts while they are in view (or near it), unmount them when they leave: a page with 1,000 keys
 * holds only a screenful of plots. */
export function observeCharts(charts) {
  const byFigure = new Map(charts.map((chart) => [chart.figure, chart]));
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const chart = byFigure.get(entry.target);
      if (!chart) continue;
      if (entry.isIntersecting) chart.mount();
      else if (chart.active) chart.unmount();
    }
  }, { rootMargin: "300px 0px" });
  for (const chart of charts) observer.observe(chart.figure);
  let timer = null;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { for (const chart of byFigure.values()) chart.resize(); }, 200);
  });
  return {
    add(chart) { byFigure.set(chart.figure, chart); observer.observe(chart.figure); },
  };
}
