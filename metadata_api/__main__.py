"""`python -m trainmon.metadata_api [--host H] [--port P] [--insecure]`: serve the API (default 127.0.0.1:5000).

Failures end like `trainmon serve`'s (`cli.run_guarded`): one line, credentials masked, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainmon.metadata_api", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 5000)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without API tokens")
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    from .cli import run_guarded

    def start() -> int:
        from .app import serve

        serve(Settings(**overrides), insecure=args.insecure)
        return 0

    return run_guarded(start)


if __name__ == "__main__":
    sys.exit(main())
