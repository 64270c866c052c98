// The runs page: pick runs to compare (a URL `/compare?runs=a,b`), and keep the filter URL free of empty fields.
import "./common.js";

const compareForm = document.getElementById("compare-form");
const button = document.getElementById("compare-button");
const boxes = () => [...compareForm.querySelectorAll('input[name="runs"]:checked')];

compareForm.addEventListener("change", () => { button.disabled = boxes().length < 2; });
compareForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const chosen = boxes();
  if (chosen.length < 2) return;
  const query = new URLSearchParams({ runs: chosen.map((box) => box.value).join(",") });
  const projects = new Set(chosen.map((box) => box.dataset.project));
  if (projects.size === 1) query.set("project", [...projects][0]);
  window.location.assign("/compare?" + query.toString().replaceAll("%2C", ","));
});

const filters = document.getElementById("filters");
filters.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(filters)) if (String(value).trim()) query.append(name, value);
  window.location.assign("/" + (query.toString() ? "?" + query : ""));
});
