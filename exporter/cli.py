"""The `trainmon` command.

Server commands (`serve`, `db`, `token`, `prune`) come from `trainmon.metadata_api.cli` and need the
`[server]` extra; `sync` comes from `trainmon.exporter.sync` and works with the exporter alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module -> what it adds; each module has `add_commands(subparsers)` and sets `func` on its parsers.
COMMAND_MODULES = {
    "trainmon.exporter.sync": "sync",
    "trainmon.metadata_api.cli": "serve, db, token, prune",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmon", description="Prometheus/Grafana-native ML training monitor")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, commands in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            unavailable = subparsers.add_parser(commands.split(",")[0], help=f"({commands}: unavailable: {error})")
            unavailable.set_defaults(func=lambda _args, error=error: _unavailable(error))
            continue
        module.add_commands(subparsers)
    return parser


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
