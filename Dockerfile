# The trainmon metadata API (and the Alertmanager config renderer docker-compose.yml runs before Alertmanager).
# Build: docker build -t trainmon-api .   Run: docker compose up (see docs/stack.md).
FROM python:3.12.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
# Every package folder of the distribution (pyproject.toml [tool.setuptools] lists them; a missing one fails the build).
COPY common ./common
COPY exporter ./exporter
COPY client ./client
COPY metadata_api ./metadata_api
COPY integrations ./integrations
# pyyaml: alertmanager/render.py, run from this image by the alertmanager-config service.
RUN pip install ".[server,postgres]" "pyyaml>=6"
COPY alertmanager ./alertmanager

# Non-root. /data/artifacts holds uploaded artifacts (a named volume in compose). /etc/alertmanager/rendered is
# where the renderer writes; it runs as Alertmanager's user (nobody, 65534) so Alertmanager can read its 0600
# secret files, and a fresh named volume mounted there inherits this ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin trainmon \
    && mkdir -p /data/artifacts /etc/alertmanager/rendered \
    && chown trainmon:trainmon /data/artifacts \
    && chown 65534:65534 /etc/alertmanager/rendered
USER trainmon

# Bound to every address, the API needs the Host names clients use (docs/api.md); compose adds `api`.
ENV HOST=0.0.0.0 \
    PORT=5000 \
    ALLOWED_HOSTS=localhost,127.0.0.1,[::1] \
    ARTIFACT_ROOT=/data/artifacts
EXPOSE 5000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/readyz', timeout=4)"]

# --insecure: the API listens on all interfaces of its container before any token exists. docker-compose.yml
# publishes it on 127.0.0.1 only; create tokens (`trainmon token create`) before exposing it further.
CMD ["python", "-m", "trainmon.metadata_api", "--insecure"]
