"""The `trainmon` command.

`sync` (this package) works with the client alone. Server commands (`serve`, `db`, `token`, `prune`) come from
`trainmon.metadata_api.cli`, imported only when present: they need the `[server]` extra. `serve` also imports
the runs recorded locally in ./trainmon-runs by trainers that found no API (`trainmon.client.discovery`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests
from trainmon.common.settings import SETTINGS

from . import discovery, sync
from .spool import find_spools

SERVER_COMMANDS = ("serve", "db", "token", "prune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmon", description="Prometheus/Grafana-native ML training monitor")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    sync.add_commands(subparsers)
    try:
        from trainmon.metadata_api import cli as server_cli  # noqa: PLC0415 - optional: the [server] extra
    except ImportError as error:
        for name in SERVER_COMMANDS:
            unavailable = subparsers.add_parser(name, help=f"(unavailable: {error})")
            unavailable.set_defaults(func=lambda _args, error=error: _unavailable(error))
    else:
        server_cli.add_commands(subparsers)
        serve = subparsers.choices["serve"]
        serve.set_defaults(func=_importing_local_runs(serve.get_default("func")))
    return parser


def _importing_local_runs(serve: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`trainmon serve` that also imports the runs recorded locally in ./trainmon-runs (trainers that found no
    API), in the background once the API is ready."""

    def run(args: argparse.Namespace) -> int:
        folder = Path.cwd() / discovery.LOCAL_RUNS_DIR
        if find_spools(folder):
            host = args.host or os.environ.get("HOST") or "127.0.0.1"
            port = args.port or int(os.environ.get("PORT") or 5000)
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            threading.Thread(target=_import_when_ready, args=(folder, url), name="trainmon-import",
                             daemon=True).start()
        return serve(args)

    return run


def _import_when_ready(folder: Path, url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    else:
        print(f"trainmon serve: the API at {url} did not get ready; local runs in {folder} were not imported "
              f"(later: trainmon sync {folder} --api-url {url})", file=sys.stderr)
        return
    token = os.environ.get(SETTINGS["api_token"].variable)
    spools = find_spools(folder)
    imported = sum(sync.sync_spool(spool, url, token, retries=3) for spool in spools)
    print(f"trainmon serve: imported {imported} of {len(spools)} local runs from {folder}", file=sys.stderr)


def _unavailable(error: ImportError) -> int:
    print(f"trainmon: this command needs the server extra: pip install 'trainmon[server]' ({error})",
          file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
