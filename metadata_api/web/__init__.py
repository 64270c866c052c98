"""trainmon's own dashboard, served by the metadata API (same process and port): server-rendered pages
(Jinja2 templates, everything escaped) and small JavaScript modules, with uPlot vendored (no CDN, no Node).

- `rendering`: the template environment, asset URLs (content-hashed for caching) and formatting filters;
- `session`: the browser's credentials (token in an HttpOnly cookie, CSRF double-submit token);
- `runs_query`: the runs page's query string (filters, sort, columns, page) parsed and written back;
- `templates/`, `static/` (`static/vendor/uplot/`: the vendored chart library).

The routes are `routes/pages.py` (HTML), `routes/events.py` (server-sent events) and `routes/run_data.py` (the
JSON the pages read besides the API's own).
"""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"
ASSETS_PATH = "/assets"  # where STATIC_DIR is mounted
