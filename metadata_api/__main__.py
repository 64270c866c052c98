"""`python -m trainmon.metadata_api [--host H] [--port P] [--insecure]`: serve the API (default 127.0.0.1:5000)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .auth import BindNotAllowed
from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainmon.metadata_api", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 5000)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without API tokens")
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    settings = Settings(**overrides)
    from .app import serve

    try:
        serve(settings, insecure=args.insecure)
    except BindNotAllowed as error:
        print(f"trainmon: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
