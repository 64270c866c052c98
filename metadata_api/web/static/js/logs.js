// The run's log: the last lines, a level filter (that level and above), a text search, and follow (new lines
// pushed by the run page's event stream are appended when they pass the filters).
import { api, element } from "./common.js";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const MAX_SHOWN = 2000;

export class LogPanel {
  constructor(list, form, path) {
    this.list = list;
    this.form = form;
    this.path = path;
    this.lastId = 0;
    let timer = null;
    form.addEventListener("input", (event) => {
      if (event.target.name === "follow") return;
      clearTimeout(timer);
      timer = setTimeout(() => this.load(), 250);
    });
    form.addEventListener("submit", (event) => event.preventDefault());
  }

  filters() {
    return { level: this.form.level.value, q: this.form.q.value.trim() };
  }

  async load() {
    const { level, q } = this.filters();
    const query = new URLSearchParams({ tail: "true", limit: "500" });
    if (level) query.set("level", level);
    if (q) query.set("q", q);
    try {
      const body = await api(`${this.path}&${query}`);
      this.list.replaceChildren(...body.items.map((line) => this.row(line)));
      this.lastId = body.items.length ? body.items[body.items.length - 1].id : this.lastId;
      this.list.scrollTop = this.list.scrollHeight;
    } catch (error) {
      this.list.replaceChildren(element("li", "could not load the log: " + error.message));
    }
  }

  passes(line) {
    const { level, q } = this.filters();
    if (level && LEVELS.indexOf(line.level) < LEVELS.indexOf(level)) return false;
    return !q || line.message.toLowerCase().includes(q.toLowerCase());
  }

  /** Lines pushed by the event stream. */
  append(lines) {
    if (!this.form.follow.checked) return;
    const fresh = lines.filter((line) => line.id > this.lastId && this.passes(line));
    this.lastId = Math.max(this.lastId, ...lines.map((line) => line.id));
    if (!fresh.length) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(...fresh.map((line) => this.row(line)));
    while (this.list.childElementCount > MAX_SHOWN) this.list.firstElementChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  row(line) {
    const item = element("li");
    const time = element("time", line.time.replace("T", " ").replace("Z", ""));
    time.setAttribute("datetime", line.time);
    item.append(time, element("span", line.level, `level level-${line.level}`), element("span", line.message));
    return item;
  }
}
