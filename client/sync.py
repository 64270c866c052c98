"""``trainmon sync [SPOOL_DIR]``: upload offline or left-over spools to the metadata API, idempotently.

Each spool is replayed oldest record first and every record is acknowledged once the API confirmed it, so an
interrupted sync resumes where it stopped and a record sent twice is stored once (metric and log batches carry
their ``batch_id``; a run that exists is not registered again, so a CRASHED run stays CRASHED unless the spool
holds its final status). A spool that a live trainer holds is skipped.
A fully uploaded spool directory is deleted (``--keep`` keeps the empty directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from trainmon.common.settings import SETTINGS

from .api_client import ApiClient
from .config import default_spool_dir
from .delivery import Backoff, Outcome, deliver
from .records import decode
from .spool import Spool, SpoolLocked, find_spools


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("sync", help="upload offline or left-over spools to the metadata API",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spool_dir", nargs="?", default=None,
                        help="a spool, or a folder of spools (default: TRAINMON_SPOOL_DIR or ~/.cache/trainmon/spool)")
    parser.add_argument("--api-url", default=None, help="metadata API (default: TRAINMON_API_URL, else the spool's)")
    parser.add_argument("--token", default=None, help="API token with write scope (default: TRAINMON_API_TOKEN)")
    parser.add_argument("--retries", type=int, default=8, help="attempts per record while the API is unavailable")
    parser.add_argument("--keep", action="store_true", help="keep spool directories once uploaded")
    parser.set_defaults(func=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    root = Path(args.spool_dir or os.environ.get(SETTINGS["spool_dir"].variable) or default_spool_dir())
    spools = find_spools(root)
    if not spools:
        print(f"trainmon sync: no spool under {root}", file=sys.stderr)
        return 0 if root.exists() else 1
    token = args.token or os.environ.get(SETTINGS["api_token"].variable)
    failures = 0
    for directory in spools:
        failures += not sync_spool(directory, args.api_url or os.environ.get(SETTINGS["api_url"].variable), token,
                                   retries=args.retries, keep=args.keep)
    return 1 if failures else 0


def sync_spool(directory: Path, api_url: str | None, token: str | None, *, retries: int = 8, keep: bool = False,
               out: TextIO | None = None) -> bool:
    """Upload one spool; True when nothing is left in it."""
    out = out or sys.stderr
    try:
        spool = Spool(directory)
    except SpoolLocked:
        print(f"trainmon sync: {directory}: in use by a running trainer or sync; skipped", file=out)
        return True
    with spool:
        url = api_url or spool.meta.get("api_url")
        if not url:
            print(f"trainmon sync: {directory}: no API URL (give --api-url or TRAINMON_API_URL)", file=out)
            return False
        total = sum(1 for _ in spool.records())
        client = ApiClient(url, token)
        progress = Progress(f"{directory.name}", total, out)
        rejected = 0
        try:
            for position, record in spool.records():
                outcome = _send_with_retries(client, record, retries, spool.meta.get("run"))
                if outcome is None:
                    progress.done(f"API unavailable at {url}; {total - progress.count} records left, run sync again")
                    return False
                rejected += outcome is False
                spool.ack(position)
                progress.step()
        finally:
            client.close()
        progress.done(f"{total} records uploaded to {url}" + (f" ({rejected} rejected by the API)" if rejected else ""))
        empty = spool.is_empty()
    if empty and not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return empty


def _send_with_retries(client: ApiClient, data: dict[str, Any], retries: int,
                       run_body: dict[str, Any] | None = None) -> bool | None:
    """True sent, False rejected for good (reported), None unavailable after ``retries`` attempts or unauthorized."""
    try:
        record = decode(data)
    except ValueError as error:
        print(f"\ntrainmon sync: skipping an unreadable record: {error}", file=sys.stderr)
        return False
    backoff = Backoff(0.5, 10.0)
    for attempt in range(max(1, retries)):
        result = deliver(client, record, run_body, register_existing=False)
        if result.outcome is Outcome.DELIVERED:
            return True
        if result.outcome is Outcome.REJECTED:
            print(f"\ntrainmon sync: the API rejected a {record.op} record: {result.error}", file=sys.stderr)
            return False
        if result.outcome is Outcome.UNAUTHORIZED:
            print(f"\ntrainmon sync: {result.error} (check --token / TRAINMON_API_TOKEN)", file=sys.stderr)
            return None
        if attempt + 1 < retries:
            time.sleep(backoff.next_delay())
    return None


class Progress:
    """A plain stderr progress bar: redrawn in place on a terminal, a line per 10 % otherwise."""

    def __init__(self, label: str, total: int, out: TextIO, width: int = 30):
        self.label, self.total, self.out, self.width = label, total, out, width
        self.count = 0
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._shown = -1
        self._draw()

    def step(self) -> None:
        self.count += 1
        self._draw()

    def _draw(self) -> None:
        percent = 100 if not self.total else self.count * 100 // self.total
        if self.tty:
            filled = self.width * percent // 100
            bar = "#" * filled + "." * (self.width - filled)
            print(f"\rsync {self.label} [{bar}] {percent:3d}% {self.count}/{self.total}", end="", file=self.out,
                  flush=True)
        elif percent // 10 != self._shown:
            self._shown = percent // 10
            print(f"sync {self.label}: {percent:3d}% ({self.count}/{self.total} records)", file=self.out, flush=True)

    def done(self, message: str) -> None:
        print(("\n" if self.tty else "") + f"sync {self.label}: {message}", file=self.out, flush=True)
