"""The /metrics HTTP server: prometheus_client's threaded server on the monitor's own registry."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger("trainmon.exporter")


@dataclass
class MetricsServer:
    """A running /metrics endpoint; `port` is the port actually bound."""

    server: object
    thread: threading.Thread
    host: str
    port: int
    requested_port: int

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()  # type: ignore[attr-defined]
        self.server.server_close()  # type: ignore[attr-defined]
        self.thread.join(5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` on host:port; a port in use gives a warning and a free port instead."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        if port == 0 or error.errno != errno.EADDRINUSE:
            raise
        server, thread = start_http_server(0, addr=host, registry=registry)
        log.warning("trainmon: port %d on %s is in use; serving /metrics on free port %d instead "
                    "(reported in trainmon_run_info{port})", port, host, server.server_port)
    return MetricsServer(server, thread, host, server.server_port, port)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
