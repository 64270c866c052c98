"""Per-block summaries of metric series (`metric_blocks`), and the M4 reduction read from them.

A block is the steps `[block * BLOCK_STEPS, block * BLOCK_STEPS + BLOCK_STEPS - 1]` of one series (run, rank, key,
see `Series`); its row holds the first and last step, the count, the finite min and max value, the first step
holding NaN, +Inf and -Inf, and the oldest wall time among its points (retention finds old points through it). Rows
are recomputed from the points (an INSERT ... SELECT of each affected block's aggregates) in the same transaction
that writes or deletes the points, so they are exact whatever a batch replaces (last write wins) or retention
deletes. On PostgreSQL a transaction-scoped advisory lock per run and rank orders concurrent refreshes of the same
series: each recomputes after the previous one committed.

The reduction (`blocked_m4`) reads one row per block instead of every point: the blocks that lie inside one bucket
are merged by one GROUP BY over their rows; a block cut by a bucket boundary is aggregated from its points, one
part a bucket. The step of each bucket's finite min and max is then found inside the first block (or part)
holding that value, at most BLOCK_STEPS steps a lookup, and the chosen points are read by step. The result equals
`reduction.m4_reduce` on the same points.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..db import SPECIAL_NAN, SPECIAL_NEG_INF, SPECIAL_POS_INF, param_mark
from .upsert import value_runs, values_sql

BLOCK_STEPS = 64
"""Steps a block covers (a power of two: `step / BLOCK_STEPS` is the block on both databases, steps are >= 0)."""
MIN_BLOCKED_WIDTH = 4 * BLOCK_STEPS
"""Buckets at least this wide are reduced from blocks; narrower ones read the points (blocks would not save)."""
LOOKUP_CHUNK = 2000  # rows a VALUES list carries
MERGE_CHUNK = 64  # most blocks an ingest upsert carries (13 parameters each: below 999, the oldest SQLite's limit)

_AGGREGATES = (f"MIN(step), MAX(step), COUNT(*), MIN(value), MAX(value), "
               f"MIN(CASE WHEN special = {SPECIAL_NAN} THEN step END), "
               f"MIN(CASE WHEN special = {SPECIAL_POS_INF} THEN step END), "
               f"MIN(CASE WHEN special = {SPECIAL_NEG_INF} THEN step END)")
_BLOCK_COLUMNS = ("first_step", "last_step", "count", "min_value", "max_value", "nan_step", "pos_inf_step",
                  "neg_inf_step", "min_wall_time")
Series = tuple[int, int, str]
"""(run_key, rank, key): one rank's history of one key in one run."""
SeriesBlock = tuple[int, int, str, int]  # run_key, rank, key, block
OF_SERIES = "run_key = {0} AND rank = {0} AND key = {0}"  # formatted with the parameter mark; then *Series
_UPSERT_TAIL = ("ON CONFLICT (run_key, rank, key, block) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in _BLOCK_COLUMNS))


def _refresh_sql(connection: Connection) -> str:
    """One block from its points: no GROUP BY (no sort), one index range scan of at most BLOCK_STEPS rows."""
    mark = param_mark(connection)
    return (f"INSERT INTO metric_blocks (run_key, rank, key, block, {', '.join(_BLOCK_COLUMNS)}) "
            f"SELECT {mark}, {mark}, {mark}, {mark}, {_AGGREGATES}, MIN(wall_time) FROM metric_points "
            f"WHERE {OF_SERIES.format(mark)} AND step BETWEEN {mark} AND {mark} {_UPSERT_TAIL}")


def _lock_ranks(connection: Connection, run_ranks: Iterable[tuple[int, int]]) -> None:
    """PostgreSQL: wait for other transactions updating blocks of these (run, rank)s (taken in one order: no
    deadlock; the ranks of one run do not wait for each other). The statements that follow see the points and
    blocks those transactions committed."""
    if connection.dialect.name == "postgresql":
        for run_key, rank in sorted(set(run_ranks)):
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                       (f"trainmon.metric_blocks:{run_key}:{rank}",))


def affected_blocks(run_key: int, points: Iterable[Sequence]) -> list[SeriesBlock]:
    """The (run_key, rank, key, block) of every block holding one of `points` ((rank, key, step, ...) rows of the
    run)."""
    return [(run_key, rank, key, block)
            for rank, key, block in sorted({(point[0], point[1], point[2] // BLOCK_STEPS) for point in points})]


def refresh_blocks(connection: Connection, blocks: Sequence[SeriesBlock], points_deleted: bool = True) -> None:
    """Recompute `blocks` (see `affected_blocks`) from the points, after the points changed in this transaction;
    with `points_deleted`, blocks left without points are deleted (ingest only adds or replaces points: it passes
    False and saves the check)."""
    if not blocks:
        return
    _lock_ranks(connection, (block[:2] for block in blocks))
    mark = param_mark(connection)
    if points_deleted:
        emptied = _emptied(connection, blocks)
        if emptied:
            connection.exec_driver_sql(
                f"DELETE FROM metric_blocks WHERE {OF_SERIES.format(mark)} AND block = {mark}", emptied)
            gone = set(emptied)
            blocks = [block for block in blocks if block not in gone]
    if blocks:
        connection.exec_driver_sql(_refresh_sql(connection),
                                   [(*block, *block[:3], *_steps_of(block[3])) for block in blocks])


def _steps_of(block: int) -> tuple[int, int]:
    return block * BLOCK_STEPS, block * BLOCK_STEPS + BLOCK_STEPS - 1


def _emptied(connection: Connection, blocks: Sequence[SeriesBlock]) -> list[SeriesBlock]:
    """Those of `blocks` that have no points left."""
    found = []
    for start in range(0, len(blocks), LOOKUP_CHUNK):
        chunk = [(*block, *_steps_of(block[3])) for block in blocks[start:start + LOOKUP_CHUNK]]
        cte, parameters = _wanted(connection, (("r", "integer"), ("rk", "integer"), ("k", "text"), ("b", "bigint"),
                                               ("lo", "bigint"), ("hi", "bigint")), chunk)
        sql = (cte + "SELECT r, rk, k, b FROM wanted WHERE NOT EXISTS (SELECT 1 FROM metric_points p "
               "WHERE p.run_key = r AND p.rank = rk AND p.key = k AND p.step BETWEEN lo AND hi)")
        found.extend(tuple(row) for row in connection.exec_driver_sql(sql, tuple(parameters)))
    return found


def record_written(connection: Connection, run_key: int, rank: int, rows: Sequence[Sequence]) -> None:
    """Bring the blocks of one rank of a run up to date after `rows` ((key, step, value, special, wall_time), one
    per (key, step)) were upserted in this transaction.

    The hot path of ingest, so the batch's own aggregates are computed here (no second read of its points) and
    merged into the stored rows by the upsert itself (`_merge_sql`): a block with no row yet had no points, so the
    batch's aggregates are the block's; a block whose stored last step is before the batch's first step in it
    gained points and lost none, so the two merge exactly (the oldest wall time when the batch's is no older). The
    upsert leaves any other block alone (a step may have been replaced, or the batch's clock is behind); when it
    wrote fewer rows than the batch has blocks, all of the batch's blocks are recomputed from their points."""
    batch = _batch_aggregates(rows)
    if not batch:
        return
    _lock_ranks(connection, [(run_key, rank)])
    blocks = [(run_key, rank, key, block, *aggregates) for (key, block), aggregates in batch.items()]
    written = 0
    for size, statements in value_runs(blocks, MERGE_CHUNK):
        sql = _merge_sql(connection.dialect.name, param_mark(connection), size)
        for parameters in statements:  # one at a time: the rows each inserted or merged
            written += connection.exec_driver_sql(sql, parameters).rowcount
    if written != len(blocks):  # rare: a step replaced, or a clock behind; no RETURNING (~10 us a statement)
        refresh_blocks(connection, [(run_key, rank, key, block) for key, block in batch], points_deleted=False)


@functools.lru_cache(maxsize=16)
def _merge_sql(dialect: str, mark: str, count: int) -> str:
    """Upsert `count` blocks' batch aggregates, merged into a stored row when the batch only appends to it and
    brings no older wall time (its row count: the rows inserted or merged). The oldest wall time is left
    out of the merge (a trainer's clock moves forward): the `min_wall_time` index entry of a merged row is not
    rewritten (one page of WAL a commit less), and a batch older than the block is recomputed like a replaced
    step."""
    if dialect == "postgresql":
        least, greatest = "LEAST({0}, {1})", "GREATEST({0}, {1})"  # both ignore NULL
    else:  # SQLite's two-argument MIN/MAX are NULL when either is
        least, greatest = "COALESCE(MIN({0}, {1}), {0}, {1})", "COALESCE(MAX({0}, {1}), {0}, {1})"
    stored, new = "metric_blocks.{}".format, "excluded.{}".format
    merge = {"last_step": new("last_step"), "count": f"{stored('count')} + {new('count')}",
             "min_value": least.format(stored("min_value"), new("min_value")),
             "max_value": greatest.format(stored("max_value"), new("max_value")),
             **{name: f"COALESCE({stored(name)}, {new(name)})"
                for name in ("nan_step", "pos_inf_step", "neg_inf_step")}}
    return (f"INSERT INTO metric_blocks (run_key, rank, key, block, {', '.join(_BLOCK_COLUMNS)}) VALUES "
            f"{values_sql(mark, 4 + len(_BLOCK_COLUMNS), count)} ON CONFLICT (run_key, rank, key, block) DO UPDATE SET "
            f"{', '.join(f'{name} = {value}' for name, value in merge.items())} "
            f"WHERE {new('first_step')} > {stored('last_step')} "
            f"AND {new('min_wall_time')} >= {stored('min_wall_time')}")


def _batch_aggregates(rows: Sequence[Sequence]) -> dict[tuple[str, int], list]:
    """(key, block) -> [first, last, count, finite min, finite max, first NaN, +Inf, -Inf step, oldest wall time]
    of `rows` ((key, step, value, special, wall_time) each). The route groups a batch's points by series, so a
    point's block is most often the previous point's: looked up only when it changes."""
    found: dict[tuple[str, int], list] = {}
    current: tuple[str, int] | None = None
    aggregate: list = []
    for key, step, value, special, wall_time in rows:
        block = step // BLOCK_STEPS
        if current is None or block != current[1] or key != current[0]:
            current = (key, block)
            aggregate = found.get(current)  # type: ignore[assignment]
            if aggregate is None:
                found[current] = aggregate = [step, step, 0, value, value, None, None, None, wall_time]
        if step < aggregate[0]:
            aggregate[0] = step
        elif step > aggregate[1]:
            aggregate[1] = step
        if wall_time < aggregate[8]:
            aggregate[8] = wall_time
        aggregate[2] += 1
        if special:  # 1 NaN, 2 +Inf, 3 -Inf: the columns after max
            slot = 4 + special
            if aggregate[slot] is None or step < aggregate[slot]:
                aggregate[slot] = step
        elif aggregate[3] is None:
            aggregate[3] = aggregate[4] = value
        elif value < aggregate[3]:
            aggregate[3] = value
        elif value > aggregate[4]:
            aggregate[4] = value
    return found


def rebuild_series_blocks(connection: Connection, series: Series) -> None:
    """Recompute every block of one series (for points written around the API, e.g. a bulk load)."""
    where = OF_SERIES.format(param_mark(connection))
    steps = connection.exec_driver_sql(f"SELECT step FROM metric_points WHERE {where}", series).scalars()
    connection.exec_driver_sql(f"DELETE FROM metric_blocks WHERE {where}", series)
    run_key, rank, key = series
    refresh_blocks(connection, affected_blocks(run_key, ((rank, key, step) for step in steps)), points_deleted=False)


# --- the reduction ---------------------------------------------------------------------------------------------

Piece = tuple[int, int, float | None, float | None, int | None, int | None, int | None]
"""first step, last step, finite min, finite max, first NaN / +Inf / -Inf step: of a bucket's whole blocks
together, or of the part of a cut block that lies in one bucket."""


def _groups_sql(mark: str) -> str:
    """One row per bucket for the blocks that lie inside one bucket (group = bucket number), one row per block
    that a bucket boundary or an end of the range cuts (group = -1 - block). Parameters: the range's first step
    and the bucket width (three times), its last step, the series (run, rank, key), and the range's first and last
    block."""
    first, last = (f"({name} - {mark}) / {mark}" for name in ("first_step", "last_step"))
    return (f"SELECT grp, MIN(first_step), MAX(last_step), MIN(min_value), MAX(max_value), MIN(nan_step), "
            f"MIN(pos_inf_step), MIN(neg_inf_step) FROM (SELECT CASE WHEN first_step >= {mark} "
            f"AND last_step <= {mark} AND {first} = {last} THEN {first} "
            f"ELSE -1 - block END AS grp, first_step, last_step, min_value, max_value, nan_step, pos_inf_step, "
            f"neg_inf_step FROM metric_blocks WHERE {OF_SERIES.format(mark)} "
            f"AND block BETWEEN {mark} AND {mark}) AS blocks GROUP BY grp")


def blocked_m4(session: Session, series: Series, first_step: int, width: int,
               last_step: int | None = None) -> list[int]:
    """The steps M4 keeps (see `reduction.m4_reduce`) for buckets of `width` steps from `first_step`, in order;
    only steps up to `last_step` when given (`first_step` must then be the range's first point)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # the lookups' estimates are far too high; JIT would cost ~100 ms
        connection.exec_driver_sql("SET LOCAL jit = off")
    if last_step is None:
        last_step = 2**63 - 1
    parameters = (first_step, last_step, first_step, width, first_step, width, first_step, width, *series,
                  first_step // BLOCK_STEPS, last_step // BLOCK_STEPS)
    pieces: list[tuple[int, bool, Piece]] = []  # (bucket, aggregated from blocks, piece)
    cut: list[tuple[int, int]] = []  # the part of each cut block in each bucket it spans, inside the range
    for group, *piece in connection.exec_driver_sql(_groups_sql(param_mark(connection)), parameters):
        if group >= 0:
            pieces.append((group, True, tuple(piece)))
            continue
        first, last = max(piece[0], first_step), min(piece[1], last_step)
        cut.extend((max(first, first_step + b * width), min(last, first_step + (b + 1) * width - 1))
                   for b in range((first - first_step) // width, (last - first_step) // width + 1))
    pieces.extend(((piece[0] - first_step) // width, False, piece)
                  for piece in _part_aggregates(connection, series, cut))
    pieces.sort(key=lambda entry: (entry[0], entry[2][0]))  # pieces never overlap: step order
    return _merge(connection, series, pieces)


def _wanted(connection: Connection, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence]) -> tuple[str, list]:
    """`WITH wanted(columns) AS (...)` over `rows`, and its parameters: on PostgreSQL one array a column (unnest:
    three parameters, not thousands), elsewhere a VALUES list with one parameter a cell."""
    names = ", ".join(name for name, _ in columns)
    if connection.dialect.name == "postgresql":
        arrays = ", ".join(f"%s::{kind}[]" for _, kind in columns)
        return (f"WITH wanted({names}) AS (SELECT * FROM unnest({arrays})) ",
                [list(column) for column in zip(*rows, strict=True)])
    row = "(" + ", ".join("?" for _ in columns) + ")"
    return (f"WITH wanted({names}) AS (VALUES {', '.join([row] * len(rows))}) ",
            [cell for row in rows for cell in row])


def _part_aggregates(connection: Connection, series: Series, ranges: list[tuple[int, int]]) -> list[Piece]:
    """The aggregates of the points in each (lo, hi) step range that holds any."""
    mark = param_mark(connection)
    found: list[Piece] = []
    for start in range(0, len(ranges), LOOKUP_CHUNK):
        chunk = ranges[start:start + LOOKUP_CHUNK]
        cte, parameters = _wanted(connection, (("lo", "bigint"), ("hi", "bigint")), chunk)
        sql = (cte + f"SELECT {_AGGREGATES} FROM wanted JOIN metric_points p ON p.run_key = {mark} "
               f"AND p.rank = {mark} AND p.key = {mark} AND p.step BETWEEN wanted.lo AND wanted.hi GROUP BY wanted.lo")
        found.extend((first, last, *rest) for first, last, _count, *rest
                     in connection.exec_driver_sql(sql, (*parameters, *series)))
    return found


Lookup = tuple[int, int, int, float]  # (0 for a min, 1 for a max), lo, hi, value


def _merge(connection: Connection, series: Series, pieces: list[tuple[int, bool, Piece]]) -> list[int]:
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
    in_points.extend(_first_blocks_with(connection, series, in_blocks))
    chosen.update(_first_steps_with(connection, series, in_points))
    return sorted(chosen)


def _first_blocks_with(connection: Connection, series: Series, lookups: list[Lookup]) -> list[Lookup]:
    """For each lookup over whole blocks: the same lookup narrowed to the first block whose min (or max) is it."""
    mark = param_mark(connection)
    narrowed: list[Lookup] = []
    for start in range(0, len(lookups), LOOKUP_CHUNK):
        chunk = lookups[start:start + LOOKUP_CHUNK]
        cte, parameters = _wanted(connection, (("mx", "integer"), ("lo", "bigint"), ("hi", "bigint"),
                                               ("v", "float8")), chunk)
        sql = (cte + f"SELECT mx, v, (SELECT b.block FROM metric_blocks b WHERE b.run_key = {mark} "
               f"AND b.rank = {mark} AND b.key = {mark} "
               f"AND b.block BETWEEN wanted.lo / {BLOCK_STEPS} AND wanted.hi / {BLOCK_STEPS} "
               f"AND b.first_step >= wanted.lo AND b.last_step <= wanted.hi "
               f"AND (CASE WHEN wanted.mx = 1 THEN b.max_value ELSE b.min_value END) = wanted.v "
               f"ORDER BY b.block LIMIT 1) FROM wanted")
        narrowed.extend((kind, block * BLOCK_STEPS, (block + 1) * BLOCK_STEPS - 1, value) for kind, value, block
                        in connection.exec_driver_sql(sql, (*parameters, *series)))
    return narrowed


def _first_steps_with(connection: Connection, series: Series, lookups: list[Lookup]) -> list[int]:
    """For each lookup: the first step in [lo, hi] holding its value."""
    mark = param_mark(connection)
    steps: list[int] = []
    for start in range(0, len(lookups), LOOKUP_CHUNK):
        chunk = [(lo, hi, value) for _kind, lo, hi, value in lookups[start:start + LOOKUP_CHUNK]]
        cte, parameters = _wanted(connection, (("lo", "bigint"), ("hi", "bigint"), ("v", "float8")), chunk)
        sql = (cte + f"SELECT (SELECT p.step FROM metric_points p WHERE p.run_key = {mark} AND p.rank = {mark} "
               f"AND p.key = {mark} "
               f"AND p.step BETWEEN wanted.lo AND wanted.hi AND p.value = wanted.v ORDER BY p.step LIMIT 1) "
               f"FROM wanted")
        steps.extend(step for (step,) in connection.exec_driver_sql(sql, (*parameters, *series)))
    return steps


def points_at(connection: Connection, series: Series, steps: Sequence[int]) -> list[Sequence]:
    """(step, value, special, wall_time) of the series' points at `steps` (an array parameter on PostgreSQL)."""
    mark = param_mark(connection)
    postgres = connection.dialect.name == "postgresql"
    rows: list[Sequence] = []
    for start in range(0, len(steps), LOOKUP_CHUNK):
        chunk = list(steps[start:start + LOOKUP_CHUNK])
        wanted = "= ANY(%s::bigint[])" if postgres else f"IN ({', '.join('?' * len(chunk))})"
        rows.extend(connection.exec_driver_sql(
            f"SELECT step, value, special, wall_time FROM metric_points WHERE {OF_SERIES.format(mark)} "
            f"AND step {wanted}", (*series, chunk) if postgres else (*series, *chunk)))
    return rows
