"""API CPU per request: 100-point metric batches (`POST /api/runs/{run_id}/metrics`) from 64 ranks of one run,
as `bench/many_ranks.py` sends them, over keep-alive HTTP to the real API under uvicorn (its own process, SQLite
file or with `--postgres` a throwaway PostgreSQL), with an API token configured (`--open`: none).

The server process's CPU time (its threads' run time in ns, `_common.cpu_reading`) is read before and after each
mode's requests, so the client (this process) is not counted. Modes, in alternating rounds:
- `ingest`: the batches (each rank's own, `"rank": N` as the SDK sends them, 25 new steps x 4 keys), in the form
  the SDK sends (`rows`, one per log call) or with `--form points` one object per point;
- `healthz`: `GET /healthz` on the same API (every middleware, no body, no database);
- `bare`: the same POSTs to a bare Starlette app under the same uvicorn settings that reads the body and answers
  the same JSON (the floor: HTTP parsing, the event loop, the ASGI call; what any implementation pays);
- `sqlite`: (SQLite only) the database's own share, measured in this process: the same batches' rows upserted
  with the API's statement by the driver's `executemany`, one transaction a batch, into a copy of the database
  migrated the same way (CPU of this thread: SQLite's B-tree, index and WAL work, no HTTP, no Python of the API).
With `--postgres` the PostgreSQL server's CPU per ingest request (postmaster and backends) is printed apart.
Goal: ingest <= 1 ms of API CPU a request.

Where the time goes: `--py-spy FILE` samples the API process during the ingest rounds (py-spy `--gil`: Python
code only; SQLite and socket I/O release the GIL, `perf record -p PID` shows those by library) and saves
collapsed stacks; `--profile FILE` runs the API under yappi (pstats; deterministic, so it inflates Python calls).

    .venv/bin/python bench/api_request_cost.py [--ranks 64] [--requests 640] [--rounds 7] [--points 100]
                                               [--postgres] [--open] [--separate-runs] [--form rows|points]
                                               [--py-spy FILE]
"""

from __future__ import annotations

import argparse
import http.client
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from _common import alternating_rounds, bench_database, cpu_reading, cpu_seconds_since, paired_ratios, print_medians
from api_ingest import raw_run, sqlite_connect
from trainmon.metadata_api import migrations
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.db import encode_value, make_engine, write_sessions
from trainmon.metadata_api.repositories.points import sqlite_upsert_sql

from devtools.procs import API_COMMAND, LOOPBACK, api_environment, free_port, start_api

KEYS = ("loss", "accuracy", "lr", "grad_norm")
RUN_ID = "request-cost"
GOAL_MS = 1.0
FLOOR_ANSWER = orjson.dumps({"accepted": 100, "duplicate": False})
#: what a registration carries besides ids: hyperparameters and the SDK's context of an 8-GPU node (about 3 KB)
PARAMS = {**{f"layer{index}_dim": 1024 * (index + 1) for index in range(16)}, "lr": 3e-4, "batch_size": 512,
          "optimizer": "adamw", "betas": [0.9, 0.95], "schedule": {"warmup": 2000, "decay": "cosine"}}
CONTEXT = {"git": {"commit": "0123456789abcdef0123456789abcdef01234567", "branch": "main", "dirty": False},
           "command": ["train.py", "--config", "configs/big.yaml"], "python": "3.11.7",
           "packages": {name: "2.5.1" for name in ("torch", "numpy", "transformers", "accelerate", "trainmon")},
           "gpus": [{"index": index, "name": "NVIDIA H200", "memory_bytes": 150_754_820_096, "driver": "570.86.15",
                     "uuid": f"GPU-{index:08d}-1111-2222-3333-444455556666"} for index in range(8)],
           "hostname": "node0", "world_size": 64}


def serve_floor(port: int) -> None:
    """The floor: a bare Starlette app answering the ingest POST (body read, fixed JSON), and /readyz."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def ingest(request: Request) -> Response:
        await request.body()
        return Response(FLOOR_ANSWER, media_type="application/json")

    async def ready(_request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    app = Starlette(routes=[Route("/api/runs/{run_id}/metrics", ingest, methods=["POST"]),
                            Route("/readyz", ready)])
    uvicorn.run(app, host=LOOPBACK, port=port, log_config=None, log_level="warning")


def serve_profiled(path: str, port: int) -> None:
    """The API as `python -m trainmon.metadata_api` runs it, under yappi (CPU clock, every thread); its stats are
    saved to `path` (pstats format) when it stops."""
    import yappi
    from trainmon.metadata_api.__main__ import main as serve_api

    # uvicorn shuts down on SIGTERM, then raises it again with the handler found at start: exit through `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    yappi.set_clock_type("cpu")
    yappi.start()
    try:
        serve_api(["--port", str(port)])
    finally:
        yappi.stop()
        yappi.get_func_stats().save(path, type="pstat")


class Ranks:
    """One keep-alive connection per rank; each rank's next batch covers its next steps."""

    def __init__(self, port: int, ranks: int, points: int, token: str | None, separate_runs: bool,
                 form: str = "rows"):
        self.connections = [http.client.HTTPConnection(LOOPBACK, port) for _ in range(ranks)]
        self.points = points
        self.form = form
        self.separate_runs = separate_runs
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self.next_step = [0] * ranks
        self.sent = 0

    def reconnect(self) -> None:
        """Fresh connections (uvicorn closes one idle for 5 s), opened before a measurement starts."""
        for connection in self.connections:
            connection.close()
            connection.connect()
        time.sleep(0.1)  # the server accepts them now, not inside the measurement

    def run_id(self, rank: int) -> str:
        return f"{RUN_ID}-{rank}" if self.separate_runs else RUN_ID

    def request(self, rank: int, method: str, path: str, body: bytes | None = None) -> bytes:
        connection = self.connections[rank]
        connection.request(method, path, body=body, headers=self.headers)
        answer = connection.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:300]!r}")
        return data

    def register(self) -> None:
        """Each rank registers as the SDK does: the run's params and context (git, versions, GPUs) come along."""
        for rank in range(len(self.connections)):
            body = {"experiment": "bench-request-cost", "run_id": self.run_id(rank), "rank": rank,
                    "world_size": len(self.connections), "host": f"node{rank // 8}", "pid": 1000 + rank,
                    "command": "train.py --config configs/big.yaml", "params": PARAMS, "context": CONTEXT}
            self.request(rank, "POST", "/api/runs", orjson.dumps(body))

    def batches(self, count: int) -> list[tuple[int, str, bytes]]:
        """`count` (rank, path, body) batches, ranks in turn, encoded before the clock starts."""
        made = []
        for index in range(count):
            rank = index % len(self.connections)
            keys = KEYS
            first = self.next_step[rank]
            steps = -(-self.points // len(keys))
            points = [{"key": key, "step": first + offset, "value": 1.0 / (1 + first + offset) + slot,
                       "wall_time": 1.7e9 + first + offset}
                      for offset in range(steps) for slot, key in enumerate(keys)][:self.points]
            self.next_step[rank] = first + steps
            self.sent += 1
            batch: dict = {"batch_id": f"b{self.sent}-{rank}", "rank": rank}
            if self.form == "points":
                batch["points"] = points
            else:
                rows: dict[int, list] = {}
                for point in points:
                    rows.setdefault(point["step"], [point["step"], point["wall_time"], {}])[2][point["key"]] = \
                        point["value"]
                batch["rows"] = list(rows.values())
            body = orjson.dumps(batch)
            made.append((rank, f"/api/runs/{self.run_id(rank)}/metrics", body))
        return made

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


class RawSqlite:
    """The `sqlite` mode: each batch's rows upserted by sqlite3's executemany, one transaction a batch."""

    def __init__(self, path: Path, ranks: Ranks):
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
        self.connection = sqlite_connect(path)()
        self.run_key = raw_run(self.connection, RUN_ID, "?")
        self.ranks = ranks
        self.statement = sqlite_upsert_sql()

    def cpu_per_request(self, count: int) -> float:
        batches = []
        for rank, _path, body in self.ranks.batches(count):
            rows = orjson.loads(body)["rows"]
            batches.append([(self.run_key, rank, key, step, *encode_value(value), wall_time)
                            for step, wall_time, values in rows for key, value in values.items()])
        started = time.thread_time()
        for rows in batches:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany(self.statement, rows)
            self.connection.execute("COMMIT")
        return (time.thread_time() - started) / count


def cpu_per_request(pid: int, ranks: Ranks, send: Callable[[], int], postgres_pid: int | None = None,
                    postgres_cpu: list[float] | None = None) -> float:
    """Server CPU seconds per request while `send()` makes its requests over `ranks`' connections (it returns how
    many)."""
    ranks.reconnect()
    before = cpu_reading(pid)
    pg_before = cpu_reading(postgres_pid, children=True) if postgres_pid else {}
    count = send()
    time.sleep(0.05)  # let the server finish what it does after the last answer (it is idle before the next)
    cpu = cpu_seconds_since(before, pid)
    if postgres_pid and postgres_cpu is not None:
        postgres_cpu.append(cpu_seconds_since(pg_before, postgres_pid, children=True) / count)
    return cpu / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--requests", type=int, default=640, help="requests per mode and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--points", type=int, default=100, help="points per batch")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of a SQLite file")
    parser.add_argument("--open", action="store_true", help="no API token (the open, loopback-only API)")
    parser.add_argument("--form", choices=("rows", "points"), default="rows",
                        help="the batch form: rows (one per log call, as the SDK sends) or points (an object each)")
    parser.add_argument("--separate-runs", action="store_true", help="one run per rank instead of one shared run")
    parser.add_argument("--profile", metavar="PSTATS", help="run the API under yappi and save its profile here "
                        "(figures then include the profiler's overhead)")
    parser.add_argument("--py-spy", metavar="STACKS", help="sample the API process with py-spy during the ingest "
                        "rounds and save its collapsed stacks here (`py-spy record --gil --format raw`)")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)  # internal: the floor app
    parser.add_argument("--serve-profiled", metavar="PSTATS", help=argparse.SUPPRESS)  # internal: API under yappi
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)  # its port (start_api passes it)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.port)
        return 0
    if args.serve_profiled:
        serve_profiled(args.serve_profiled, args.port)
        return 0
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp, \
            bench_database(args.postgres, Path(tmp)) as (url, postgres_pid):
        workdir = Path(tmp)
        engine = make_engine(url)
        token = None
        try:
            migrations.upgrade(engine)
            if not args.open:
                with write_sessions(engine)() as session:
                    token = create_token(session, "bench", "write", "bench/api_request_cost.py")
                    session.commit()
        finally:
            engine.dispose()
        api_port, floor_port = free_port(), free_port()
        command = (sys.executable, __file__, "--serve-profiled", str(Path(args.profile).resolve())) \
            if args.profile else API_COMMAND
        api = start_api(api_environment(url, workdir, api_port, WRITES_PER_MINUTE="10000000"), workdir, api_port,
                        command=command, log_name="api.log")
        floor = start_api(api_environment(url, workdir, floor_port), workdir, floor_port,
                          command=(sys.executable, __file__, "--serve-floor"), log_name="floor.log")
        api_ranks = Ranks(api_port, args.ranks, args.points, token, args.separate_runs, args.form)
        floor_ranks = Ranks(floor_port, args.ranks, args.points, token, args.separate_runs, args.form)
        postgres_cpu: list[float] = []
        try:
            api_ranks.register()

            def ingest(count: int, measured: bool = True) -> float:
                batches = api_ranks.batches(count)

                def send() -> int:
                    for rank, path, body in batches:
                        api_ranks.request(rank, "POST", path, body)
                    return len(batches)

                return cpu_per_request(api.pid, api_ranks, send, postgres_pid, postgres_cpu if measured else None)

            def healthz(count: int) -> float:
                def send() -> int:
                    for index in range(count):
                        api_ranks.request(index % args.ranks, "GET", "/healthz")
                    return count

                return cpu_per_request(api.pid, api_ranks, send)

            def bare(count: int) -> float:
                batches = floor_ranks.batches(count)

                def send() -> int:
                    for rank, path, body in batches:
                        floor_ranks.request(rank, "POST", path, body)
                    return len(batches)

                return cpu_per_request(floor.pid, floor_ranks, send)

            for warm_up in (lambda n: ingest(n, measured=False), healthz, bare):  # imports, caches, connections
                warm_up(args.ranks * 2)
            sampler = None
            if args.py_spy:
                sampler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "--format",
                                            "raw", "--rate", "1000", "--threads", "-p", str(api.pid),
                                            "-o", args.py_spy],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            modes = {"ingest": lambda _index: ingest(args.requests), "healthz": lambda _index: healthz(args.requests),
                     "bare": lambda _index: bare(args.requests)}
            if not args.postgres and args.form == "rows":
                raw = RawSqlite(workdir / "raw.db", Ranks(api_port, args.ranks, args.points, None, False))
                raw.cpu_per_request(args.ranks * 2)
                modes["sqlite"] = lambda _index: raw.cpu_per_request(args.requests)
            if args.py_spy or args.profile:  # the profile of ingest alone
                modes = {"ingest": modes["ingest"]}
            samples = alternating_rounds(args.rounds, modes, rotate=True)
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                sampler.wait(timeout=60)
        except Exception:
            print(f"API log:\n{api.log_tail()}", file=sys.stderr)
            raise
        finally:
            api_ranks.close()
            floor_ranks.close()
            api.stop()
            floor.stop()
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{args.ranks} ranks, {args.points}-point batches ({args.form}), {database}, "
          f"{'no token' if args.open else 'write token'}; {args.requests} requests per mode, {args.rounds} rounds; "
          "API process CPU per request:")
    if "bare" not in samples:
        print(f"ingest: median {statistics.median(samples['ingest']) * 1000:.3f} ms (profiled)")
        return 0
    medians = print_medians(samples, "bare", "ms", scale=1000, digits=3)
    paired = paired_ratios(samples, "bare")
    print("paired within each round (median of the mode's CPU / the bare floor's in the same round; steadier when "
          "the machine drifts): " + ", ".join(f"{mode} {paired[mode]:.2f}x" for mode in samples if mode != "bare"))
    ingest_ms = medians["ingest"] * 1000
    print(f"ingest: {medians['ingest'] * 1e6 / args.points:.1f} us per point; over the floor "
          f"{(medians['ingest'] - medians['bare']) * 1000:.3f} ms a request; goal <= {GOAL_MS} ms: "
          f"{'met' if ingest_ms <= GOAL_MS else 'MISSED'}")
    if "sqlite" in medians:
        beyond = medians["ingest"] - medians["sqlite"] - medians["bare"]
        print(f"SQLite's own work (the same rows, one transaction a batch): {medians['sqlite'] * 1000:.3f} ms a "
              f"request; ingest beyond it and the HTTP floor: {beyond * 1000:.3f} ms")
    if postgres_cpu:
        print(f"PostgreSQL server CPU per ingest request: median {statistics.median(postgres_cpu) * 1000:.3f} ms "
              "(not in the figures above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
