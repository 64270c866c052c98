// The run's artifacts: images with a step slider per name, histograms as a heatmap over steps (one column a
// step, value bins up the y axis, darker = more of that step's values), the logged model graph as a tree.
import { api, element } from "./common.js";

const MAX_HISTOGRAM_STEPS = 120;
const HEATMAP_ROWS = 60;

function fileUrl(runPath, projectQuery, id) {
  return `${runPath}/artifacts/${id}/file?${projectQuery}`;
}

function showImages(images, runPath, projectQuery) {
  for (const figure of document.querySelectorAll("figure.image-steps")) {
    const items = (images[figure.dataset.name] || []).slice().sort((a, b) => (a.step ?? -1) - (b.step ?? -1));
    const img = figure.querySelector("img");
    const label = figure.querySelector(".image-step");
    const slider = figure.querySelector(".image-slider");
    const show = (index) => {
      const item = items[index];
      if (!item) return;
      img.src = fileUrl(runPath, projectQuery, item.id);
      img.alt = `${figure.dataset.name} at step ${item.step ?? "none"}`;
      label.textContent = item.step === null ? "" : `step ${item.step}`;
    };
    if (slider) {
      slider.setAttribute("aria-label", `Step of ${figure.dataset.name}`);
      slider.addEventListener("input", () => show(Number(slider.value)));
    }
    show(items.length - 1);
  }
}

function sample(items, count) {
  if (items.length <= count) return items;
  return Array.from({ length: count }, (_, i) => items[Math.round((i * (items.length - 1)) / (count - 1))]);
}

async function showHistograms(histograms, runPath, projectQuery) {
  for (const figure of document.querySelectorAll("figure.histogram")) {
    const items = sample((histograms[figure.dataset.name] || []).slice().sort((a, b) => (a.step ?? 0) - (b.step ?? 0)),
      MAX_HISTOGRAM_STEPS);
    const loaded = await Promise.all(items.map((item) =>
      fetch(fileUrl(runPath, projectQuery, item.id), { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : null)).catch(() => null)));
    const columns = loaded.map((h, i) => ({ step: items[i].step, h })).filter((c) => c.h && c.h.bins && c.h.counts);
    drawHeatmap(figure, columns);
  }
}

function drawHeatmap(figure, columns) {
  const canvas = figure.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  if (!columns.length) { figure.querySelector(".histogram-range").textContent = "no readable histogram"; return; }
  const low = Math.min(...columns.map((c) => c.h.bins[0]));
  const high = Math.max(...columns.map((c) => c.h.bins[c.h.bins.length - 1]));
  const span = high - low || 1;
  const width = canvas.width / columns.length;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  columns.forEach((column, x) => {
    const rows = new Array(HEATMAP_ROWS).fill(0);
    const { bins, counts } = column.h;
    counts.forEach((count, i) => {
      const center = (bins[i] + bins[i + 1]) / 2;
      rows[Math.min(HEATMAP_ROWS - 1, Math.max(0, Math.floor(((center - low) / span) * HEATMAP_ROWS)))] += count;
    });
    const peak = Math.max(...rows) || 1;
    rows.forEach((count, y) => {
      if (!count) return;
      ctx.fillStyle = `rgba(11, 92, 173, ${0.15 + 0.85 * (count / peak)})`;
      const top = canvas.height - ((y + 1) * canvas.height) / HEATMAP_ROWS;
      ctx.fillRect(x * width, top, Math.ceil(width), Math.ceil(canvas.height / HEATMAP_ROWS));
    });
  });
  const first = columns[0].step, last = columns[columns.length - 1].step;
  figure.querySelector(".histogram-range").textContent =
    `steps ${first ?? "—"} to ${last ?? "—"} (left to right) · values ${low.toPrecision(4)} to ${high.toPrecision(4)} (bottom to top)`;
}

function shapes(node) {
  const parts = [];
  if (node.input_shapes && node.input_shapes.length) parts.push("in " + JSON.stringify(node.input_shapes));
  if (node.output_shapes && node.output_shapes.length) parts.push("out " + JSON.stringify(node.output_shapes));
  return parts.join(" ");
}

function treeNode(node, depth) {
  const children = Array.isArray(node.children) ? node.children : [];
  const title = `${node.name || "(root)"}: ${node.type || "?"} · ${Number(node.parameters || 0).toLocaleString()} params`;
  if (!children.length) {
    const leaf = element("div", title, "leaf");
    const shape = shapes(node);
    if (shape) leaf.append(" ", element("span", shape, "shape"));
    return leaf;
  }
  const details = element("details");
  details.open = depth < 1;
  const summary = element("summary", title);
  const shape = shapes(node);
  if (shape) summary.append(" ", element("span", shape, "shape"));
  details.append(summary, ...children.map((child) => treeNode(child, depth + 1)));
  return details;
}

async function showGraphs(graphs, runPath, projectQuery) {
  for (const holder of document.querySelectorAll(".graph-tree")) {
    const items = graphs[holder.dataset.name] || [];
    const item = items[items.length - 1];
    try {
      const response = await fetch(fileUrl(runPath, projectQuery, item.id), { credentials: "same-origin" });
      const graph = await response.json();
      holder.replaceChildren(element("h4", holder.dataset.name), treeNode(graph, 0));
    } catch (error) {
      holder.replaceChildren(element("p", `${holder.dataset.name}: not a module tree (${error.message})`, "hint"));
    }
  }
}

export function showArtifacts(groups, runPath, projectQuery) {
  showImages(groups.image || {}, runPath, projectQuery);
  showHistograms(groups.histogram || {}, runPath, projectQuery);
  showGraphs(groups.graph || {}, runPath, projectQuery);
}
