"""The dashboard's static files (JS, CSS, the vendored uPlot) under `/assets/`, revalidated on every use
(`Cache-Control: no-cache`: an unchanged file costs a 304, a changed one is never served stale)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from . import ASSETS_PATH, STATIC_DIR


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_assets(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, _Assets(directory=STATIC_DIR), name="assets")
