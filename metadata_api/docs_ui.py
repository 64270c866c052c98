"""`/docs`: Swagger UI from the copy in `static/swagger/` (no CDN: it works offline and under the API's CSP).

The page is FastAPI's `get_swagger_ui_html` pointing at `/static/swagger/`; its one inline script (the
SwaggerUIBundle call) is allowed by its SHA-256 in the page's own Content-Security-Policy, which
`middleware.RequestGuard` leaves in place. ReDoc is not served (`redoc_url=None` in `create_app`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_DIR = Path(__file__).resolve().parent / "static" / "swagger"
SWAGGER_PREFIX = "/static/swagger"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page(openapi_url: str, title: str) -> tuple[str, str]:
    """The Swagger UI page and the Content-Security-Policy that lets exactly its inline script run."""
    html = get_swagger_ui_html(openapi_url=openapi_url, title=title,
                               swagger_js_url=f"{SWAGGER_PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{SWAGGER_PREFIX}/swagger-ui.css",
                               swagger_favicon_url="data:,").body.decode()
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
                      for script in _INLINE_SCRIPT.findall(html))
    policy = (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")
    return html, policy


def install_docs(app: FastAPI) -> None:
    """Serve the vendored Swagger UI files and `/docs` on `app` (created with docs_url=None, redoc_url=None)."""
    app.mount(SWAGGER_PREFIX, StaticFiles(directory=SWAGGER_DIR), name="swagger-ui")
    html, policy = docs_page(app.openapi_url or "/openapi.json", f"{app.title} - Swagger UI")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})
