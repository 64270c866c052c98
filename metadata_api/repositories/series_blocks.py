"""Per-block summaries of metric series (`metric_blocks`), and the M4 reduction read from them.

A block is the steps `[block * BLOCK_STEPS, block * BLOCK_STEPS + BLOCK_STEPS - 1]` of one (run, key); its row
holds the first and last step, the count, the finite min and max value and the first step holding NaN, +Inf and
-Inf. Rows are recomputed from the points (one INSERT ... SELECT ... GROUP BY over the affected blocks) in the
same transaction that writes or deletes the points, so they are exact whatever a batch replaces (last write
wins) or retention deletes. On PostgreSQL a transaction-scoped advisory lock per run orders concurrent
refreshes of the same run: each recomputes after the previous one committed.

The reduction (`blocked_m4`) reads one row per block instead of every point: the blocks that lie inside one bucket
are merged by one GROUP BY over their rows; a block cut by a bucket boundary is aggregated from its points, one
part a bucket. The step of each bucket's finite min and max is then found inside the first block (or part)
holding that value, at most BLOCK_STEPS steps a lookup, and the chosen points are read by step. The result equals
`reduction.m4_reduce` on the same points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..db import SPECIAL_NAN, SPECIAL_NEG_INF, SPECIAL_POS_INF

BLOCK_STEPS = 64
"""Steps a block covers (a power of two: `step / BLOCK_STEPS` is the block on both databases, steps are >= 0)."""
MIN_BLOCKED_WIDTH = 4 * BLOCK_STEPS
"""Buckets at least this wide are reduced from blocks; narrower ones read the points (blocks would not save)."""
LOOKUP_CHUNK = 2000  # rows a VALUES list carries

_AGGREGATES = (f"MIN(step), MAX(step), COUNT(*), MIN(value), MAX(value), "
               f"MIN(CASE WHEN special = {SPECIAL_NAN} THEN step END), "
               f"MIN(CASE WHEN special = {SPECIAL_POS_INF} THEN step END), "
               f"MIN(CASE WHEN special = {SPECIAL_NEG_INF} THEN step END)")
_BLOCK_COLUMNS = ("first_step", "last_step", "count", "min_value", "max_value", "nan_step", "pos_inf_step",
                  "neg_inf_step")
_UPSERT_TAIL = ("ON CONFLICT (run_id, key, block) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in _BLOCK_COLUMNS))


def _mark(connection: Connection) -> str:
    return "?" if connection.dialect.paramstyle == "qmark" else "%s"


def _refresh_sql(connection: Connection) -> str:
    mark = _mark(connection)
    return (f"INSERT INTO metric_blocks (run_id, key, block, {', '.join(_BLOCK_COLUMNS)}) "
            f"SELECT run_id, key, step / {BLOCK_STEPS}, {_AGGREGATES} FROM metric_points "
            f"WHERE run_id = {mark} AND key = {mark} AND step BETWEEN {mark} AND {mark} "
            f"GROUP BY run_id, key, step / {BLOCK_STEPS} {_UPSERT_TAIL}")


def _lock_runs(connection: Connection, ranges: Sequence[tuple[str, str, int, int]]) -> None:
    """PostgreSQL: wait for other transactions refreshing blocks of these runs (taken in one order: no deadlock).
    The refresh statements that follow read the points those transactions committed."""
    if connection.dialect.name == "postgresql":
        for run_id in sorted({r[0] for r in ranges}):
            connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtextextended('trainmon.metric_blocks:' || %s, 0))", (run_id,))


def block_ranges(run_id: str, points: Iterable[Sequence]) -> list[tuple[str, str, int, int]]:
    """(run_id, key, first step, last step) ranges covering every block that holds one of `points` ((key, step,
    ...) rows of the run), contiguous blocks of a key joined into one range, in (key, step) order."""
    ranges: list[list] = []
    for key, block in sorted({(point[0], point[1] // BLOCK_STEPS) for point in points}):
        if ranges and ranges[-1][1] == key and ranges[-1][3] == block - 1:
            ranges[-1][3] = block
        else:
            ranges.append([run_id, key, block, block])
    return [(run_id, key, lo * BLOCK_STEPS, (hi + 1) * BLOCK_STEPS - 1) for run_id, key, lo, hi in ranges]


def refresh_blocks(connection: Connection, ranges: Sequence[tuple[str, str, int, int]],
                   points_deleted: bool = True) -> None:
    """Recompute the blocks in `ranges` (see `block_ranges`) from the points, after the points changed in this
    transaction; with `points_deleted`, blocks left without points are deleted (ingest only adds or replaces
    points: it passes False and saves the check)."""
    if not ranges:
        return
    _lock_runs(connection, ranges)
    mark = _mark(connection)
    if points_deleted:
        emptied = [(run_id, key, block) for run_id, key, lo, hi in ranges for (block,) in connection.exec_driver_sql(
            f"SELECT block FROM metric_blocks b WHERE run_id = {mark} AND key = {mark} AND block BETWEEN {mark} "
            f"AND {mark} AND NOT EXISTS (SELECT 1 FROM metric_points p WHERE p.run_id = b.run_id AND p.key = b.key "
            f"AND p.step BETWEEN b.block * {BLOCK_STEPS} AND b.block * {BLOCK_STEPS} + {BLOCK_STEPS - 1})",
            (run_id, key, lo // BLOCK_STEPS, hi // BLOCK_STEPS))]
        if emptied:
            connection.exec_driver_sql(
                f"DELETE FROM metric_blocks WHERE run_id = {mark} AND key = {mark} AND block = {mark}", emptied)
    connection.exec_driver_sql(_refresh_sql(connection), list(ranges))


def rebuild_series_blocks(connection: Connection, run_id: str, key: str) -> None:
    """Recompute every block of one series (for points written around the API, e.g. a bulk load)."""
    refresh_blocks(connection, [(run_id, key, 0, 2**63 - 1)])


# --- the reduction ---------------------------------------------------------------------------------------------

Piece = tuple[int, int, float | None, float | None, int | None, int | None, int | None]
"""first step, last step, finite min, finite max, first NaN / +Inf / -Inf step: of a bucket's whole blocks
together, or of the part of a cut block that lies in one bucket."""


def _groups_sql(mark: str) -> str:
    """One row per bucket for the blocks that lie inside one bucket (group = bucket number), one row per block
    that a bucket boundary cuts (group = -1 - block)."""
    first, last = (f"({name} - {mark}) / {mark}" for name in ("first_step", "last_step"))
    return (f"SELECT grp, MIN(first_step), MAX(last_step), MIN(min_value), MAX(max_value), MIN(nan_step), "
            f"MIN(pos_inf_step), MIN(neg_inf_step) FROM (SELECT CASE WHEN {first} = {last} THEN {first} "
            f"ELSE -1 - block END AS grp, first_step, last_step, min_value, max_value, nan_step, pos_inf_step, "
            f"neg_inf_step FROM metric_blocks WHERE run_id = {mark} AND key = {mark}) AS blocks GROUP BY grp")


def blocked_m4(session: Session, run_id: str, key: str, first_step: int, width: int) -> list[int]:
    """The steps M4 keeps (see `reduction.m4_reduce`) for buckets of `width` steps from `first_step`, in order."""
    connection = session.connection()
    bounds = (first_step, width) * 3
    pieces: list[tuple[int, bool, Piece]] = []  # (bucket, aggregated from blocks, piece)
    cut: list[tuple[int, int]] = []  # the part of each cut block in each bucket it spans
    for group, *piece in connection.exec_driver_sql(_groups_sql(_mark(connection)), (*bounds, run_id, key)):
        if group >= 0:
            pieces.append((group, True, tuple(piece)))
            continue
        first, last = piece[0], piece[1]
        cut.extend((max(first, first_step + b * width), min(last, first_step + (b + 1) * width - 1))
                   for b in range((first - first_step) // width, (last - first_step) // width + 1))
    pieces.extend(((piece[0] - first_step) // width, False, piece)
                  for piece in _part_aggregates(connection, run_id, key, cut))
    pieces.sort(key=lambda entry: (entry[0], entry[2][0]))  # pieces never overlap: step order
    return _merge(connection, run_id, key, pieces)


def _values_cte(connection: Connection, columns: Sequence[tuple[str, str]], rows: int) -> str:
    """`WITH wanted(columns) AS (VALUES ...)` with one bound parameter a cell (typed on PostgreSQL)."""
    postgres = connection.dialect.name == "postgresql"
    row = "(" + ", ".join(f"%s::{kind}" if postgres else "?" for _, kind in columns) + ")"
    return f"WITH wanted({', '.join(name for name, _ in columns)}) AS (VALUES {', '.join([row] * rows)}) "


def _flat(rows: Sequence[Sequence]) -> list:
    return [cell for row in rows for cell in row]


def _part_aggregates(connection: Connection, run_id: str, key: str, ranges: list[tuple[int, int]]) -> list[Piece]:
    """The aggregates of the points in each (lo, hi) step range that holds any."""
    mark = _mark(connection)
    found: list[Piece] = []
    for start in range(0, len(ranges), LOOKUP_CHUNK):
        chunk = ranges[start:start + LOOKUP_CHUNK]
        sql = (_values_cte(connection, (("lo", "bigint"), ("hi", "bigint")), len(chunk))
               + f"SELECT {_AGGREGATES} FROM wanted JOIN metric_points p ON p.run_id = {mark} "
               f"AND p.key = {mark} AND p.step BETWEEN wanted.lo AND wanted.hi GROUP BY wanted.lo")
        found.extend((first, last, *rest) for first, last, _count, *rest
                     in connection.exec_driver_sql(sql, (*_flat(chunk), run_id, key)))
    return found


Lookup = tuple[int, int, int, float]  # (0 for a min, 1 for a max), lo, hi, value


def _merge(connection: Connection, run_id: str, key: str, pieces: list[tuple[int, bool, Piece]]) -> list[int]:
    """Merge the pieces (by bucket, in step order); look up the first step of each bucket's finite extremes."""
    chosen: set[int] = set()
    in_blocks: list[Lookup] = []  # extremes of a bucket's whole blocks: first find the block, then the step
    in_points: list[Lookup] = []
    index = 0
    while index < len(pieces):
        bucket = pieces[index][0]
        end = index + 1
        while end < len(pieces) and pieces[end][0] == bucket:
            end += 1
        chosen.add(pieces[index][2][0])
        chosen.add(pieces[end - 1][2][1])
        specials: list[int | None] = [None, None, None]
        low = high = None
        for _bucket, from_blocks, piece in pieces[index:end]:
            first, last, piece_low, piece_high, *piece_specials = piece
            if piece_low is not None and (low is None or piece_low < low[3]):
                low = (from_blocks, first, last, piece_low)
            if piece_high is not None and (high is None or piece_high > high[3]):
                high = (from_blocks, first, last, piece_high)
            specials = [mine if mine is not None else theirs
                        for mine, theirs in zip(specials, piece_specials, strict=True)]
        chosen.update(step for step in specials if step is not None)
        for kind, extreme, infinity in ((0, low, specials[2]), (1, high, specials[1])):
            if extreme is not None and infinity is None:  # an infinity is the extreme when the bucket has one
                (in_blocks if extreme[0] else in_points).append((kind, *extreme[1:]))
        index = end
    in_points.extend(_first_blocks_with(connection, run_id, key, in_blocks))
    chosen.update(_first_steps_with(connection, run_id, key, in_points))
    return sorted(chosen)


def _first_blocks_with(connection: Connection, run_id: str, key: str, lookups: list[Lookup]) -> list[Lookup]:
    """For each lookup over whole blocks: the same lookup narrowed to the first block whose min (or max) is it."""
    mark = _mark(connection)
    narrowed: list[Lookup] = []
    for start in range(0, len(lookups), LOOKUP_CHUNK):
        chunk = lookups[start:start + LOOKUP_CHUNK]
        sql = (_values_cte(connection, (("mx", "integer"), ("lo", "bigint"), ("hi", "bigint"), ("v", "float8")),
                           len(chunk))
               + f"SELECT mx, v, (SELECT b.block FROM metric_blocks b WHERE b.run_id = {mark} AND b.key = {mark} "
               f"AND b.block BETWEEN wanted.lo / {BLOCK_STEPS} AND wanted.hi / {BLOCK_STEPS} "
               f"AND b.first_step >= wanted.lo AND b.last_step <= wanted.hi "
               f"AND (CASE WHEN wanted.mx = 1 THEN b.max_value ELSE b.min_value END) = wanted.v "
               f"ORDER BY b.block LIMIT 1) FROM wanted")
        narrowed.extend((kind, block * BLOCK_STEPS, (block + 1) * BLOCK_STEPS - 1, value) for kind, value, block
                        in connection.exec_driver_sql(sql, (*_flat(chunk), run_id, key)))
    return narrowed


def _first_steps_with(connection: Connection, run_id: str, key: str, lookups: list[Lookup]) -> list[int]:
    """For each lookup: the first step in [lo, hi] holding its value."""
    mark = _mark(connection)
    steps: list[int] = []
    for start in range(0, len(lookups), LOOKUP_CHUNK):
        chunk = [(lo, hi, value) for _kind, lo, hi, value in lookups[start:start + LOOKUP_CHUNK]]
        sql = (_values_cte(connection, (("lo", "bigint"), ("hi", "bigint"), ("v", "float8")), len(chunk))
               + f"SELECT (SELECT p.step FROM metric_points p WHERE p.run_id = {mark} AND p.key = {mark} "
               f"AND p.step BETWEEN wanted.lo AND wanted.hi AND p.value = wanted.v ORDER BY p.step LIMIT 1) "
               f"FROM wanted")
        steps.extend(step for (step,) in connection.exec_driver_sql(sql, (*_flat(chunk), run_id, key)))
    return steps
