"""The `trainmon` command.

`sync` (this package) works with the client alone. Server commands (`serve`, `db`, `token`, `prune`) come from
`trainmon.metadata_api.cli`, imported only when present: they need the `[server]` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import sync

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
