"""Zero configuration: where a run goes when no API URL was given.

An explicit ``api_url`` (or ``TRAINMON_API_URL``) always wins, and ``api_url=None`` means "no metadata API"
(Prometheus only). Given nothing: a trainmon metadata API answering at `DEFAULT_LOCAL_API` is used; otherwise
the run is recorded locally, in the spool format, under `LOCAL_RUNS_DIR` in the working directory (as
``mlflow ui`` reads ``./mlruns``), and ``trainmon serve`` started in that folder imports it.
"""

from __future__ import annotations

import requests

DEFAULT_LOCAL_API = "http://127.0.0.1:5000"
LOCAL_RUNS_DIR = "trainmon-runs"
#: what `/healthz` of the metadata API names itself (so that another server on port 5000 is not mistaken for it)
SERVICE = "trainmon-metadata-api"


def local_api(url: str = DEFAULT_LOCAL_API) -> str | None:
    """``url`` when a trainmon metadata API answers there right away (at most ~0.5 s), else None."""
    try:
        answer = requests.get(f"{url}/healthz", timeout=(0.25, 0.5))
        return url if answer.ok and answer.json().get("service") == SERVICE else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
