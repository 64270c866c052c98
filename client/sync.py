"""``trainmon sync [SPOOL_DIR]``: upload offline or left-over spools to the metadata API, idempotently.

Each spool is replayed oldest record first and every record is acknowledged once the API confirmed it, so an
interrupted sync resumes where it stopped and a record sent twice is stored once (metric and log batches carry
their ``batch_id``; a run that exists is not registered again, so a CRASHED run stays CRASHED unless the spool
holds its final status). Then the run's final status, when the trainer could not deliver it at finish
(``final-status.json``). A spool that a live trainer holds is skipped.

Records the API refuses for good are kept as dead letters (``dead-letters.jsonl``) and listed; after a server
fix, ``--retry-rejected`` sends them again. A spool directory is deleted once nothing is left in it: no record,
no final status, no dead letter (``--keep`` keeps it anyway).
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

from . import pending_status
from .api_client import ApiClient
from .config import default_spool_dir
from .dead_letters import DeadLetters
from .delivery import Backoff, Deliverer, Outcome
from .records import SetStatus, decode
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
    parser.add_argument("--retry-rejected", action="store_true",
                        help="send the records the API refused (dead letters) again, after a server fix")
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
                                   retries=args.retries, keep=args.keep, retry_rejected=args.retry_rejected)
    return 1 if failures else 0


def sync_spool(directory: Path, api_url: str | None, token: str | None, *, retries: int = 8, keep: bool = False,
               retry_rejected: bool = False, out: TextIO | None = None) -> bool:
    """Upload one spool: its records, then its waiting final status; with ``retry_rejected`` its dead letters too.
    True when nothing is left to send (dead letters are listed, and kept until they are retried)."""
    out = out or sys.stderr
    try:
        spool = Spool(directory)
    except SpoolLocked:
        print(f"trainmon sync: {directory}: in use by a running trainer or sync; skipped", file=out)
        return True
    dead_letters = DeadLetters(directory)
    with spool:
        url = api_url or spool.meta.get("api_url")
        if not url:
            print(f"trainmon sync: {directory}: no API URL (give --api-url or TRAINMON_API_URL)", file=out)
            return False
        client = ApiClient(url, token)
        client.project = (spool.meta.get("run") or {}).get("project")
        send = Sender(client, retries, spool.meta.get("run"), dead_letters, out)
        try:
            done = (_replay(spool, send, directory.name, url, out)
                    and _final_status(directory, send, out)
                    and (not retry_rejected or _retry_dead_letters(dead_letters, send, out)))
        finally:
            client.close()
        empty = spool.is_empty()
    waiting = dead_letters.entries()
    if waiting:
        print(f"trainmon sync: {directory.name}: {len(waiting)} records refused by the API are kept in "
              f"{dead_letters.path}:", file=out)
        for entry in waiting[:20]:
            print(f"  {entry['record'].get('op')}: {entry.get('status')} {str(entry.get('message', ''))[:200]}",
                  file=out)
        print("  after a server fix: trainmon sync --retry-rejected", file=out)
    if done and empty and not waiting and not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return done and empty


def _replay(spool: Spool, send: Sender, label: str, url: str, out: TextIO) -> bool:
    total = sum(1 for _ in spool.records())
    progress = Progress(label, total, out)
    for position, data in spool.records():
        outcome = send(data)
        if outcome is None:
            progress.done(f"API unavailable at {url}; {total - progress.count} records left, run sync again")
            return False
        spool.ack(position)
        progress.step()
    progress.done(f"{total} records uploaded to {url}" + (f" ({send.rejected} refused by the API)"
                                                          if send.rejected else ""))
    return True


def _final_status(directory: Path, send: Sender, out: TextIO) -> bool:
    waiting = pending_status.load(directory)
    if waiting is None:
        return True
    run_id, status = waiting
    outcome = send(SetStatus(run_id, status).to_json())
    if outcome is None:
        return False
    pending_status.remove(directory)  # delivered, or refused and kept as a dead letter
    if outcome:
        print(f"sync {directory.name}: final status {status} delivered", file=out)
    return True


def _retry_dead_letters(dead_letters: DeadLetters, send: Sender, out: TextIO) -> bool:
    entries = dead_letters.entries()
    kept, unavailable = [], False
    for entry in entries:
        outcome = None if unavailable else send(entry["record"], keep_rejected=False)
        unavailable = unavailable or outcome is None
        if not outcome:
            kept.append(entry)
    dead_letters.replace(kept)
    print(f"trainmon sync: {len(entries) - len(kept)} of {len(entries)} refused records delivered on retry", file=out)
    return not unavailable


class Sender:
    """Sends one spooled record under the delivery policy, retrying while the API is unavailable."""

    def __init__(self, client: ApiClient, retries: int, run_body: dict[str, Any] | None, dead_letters: DeadLetters,
                 out: TextIO):
        self.deliver = Deliverer(client, run_body, register_existing=False)
        self.retries = retries
        self.dead_letters = dead_letters
        self.out = out
        self.rejected = 0

    def __call__(self, data: dict[str, Any], keep_rejected: bool = True) -> bool | None:
        """True sent, False refused for good (kept as a dead letter), None unavailable after ``retries`` attempts
        or unauthorized (stop: the record stays where it is)."""
        try:
            record = decode(data)
        except ValueError as error:
            print(f"\ntrainmon sync: an unreadable record is kept as a dead letter: {error}", file=self.out)
            if keep_rejected:
                self.dead_letters.add(dict(data), None, str(error))
            return False
        backoff = Backoff(0.5, 10.0)
        for attempt in range(max(1, self.retries)):
            result = self.deliver(record)
            if result.outcome is Outcome.DELIVERED:
                return True
            if result.outcome is Outcome.REJECTED:
                self.rejected += 1
                print(f"\ntrainmon sync: the API refused a {record.op} record: {result.message}", file=self.out)
                if keep_rejected:
                    self.dead_letters.add(record.to_json(), result.status, result.message)
                return False
            if result.outcome is Outcome.UNAUTHORIZED:
                print(f"\ntrainmon sync: {result.message} (check --token / TRAINMON_API_TOKEN)", file=self.out)
                return None
            if attempt + 1 < self.retries:
                time.sleep(backoff.next_delay(result.retry_after))
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
