"""INSERT ... ON CONFLICT for SQLite and PostgreSQL (both speak it; SQLAlchemy has one construct per dialect)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database {dialect!r}")


def insert_ignore(session: Session, table: Table, values: Mapping[str, Any], conflict: Sequence[str]) -> bool:
    """Insert one row unless `conflict` columns already hold it; True when a row was inserted."""
    statement = (_insert(session, table).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
                 .returning(table.c[conflict[0]]))  # rowcount is not reliable across drivers; RETURNING is
    return session.execute(statement).first() is not None


def upsert_many(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], conflict: Sequence[str],
                update: Sequence[str]) -> None:
    """Insert `rows`; a row whose `conflict` columns exist already gets its `update` columns replaced."""
    if not rows:
        return
    statement = _insert(session, table)
    statement = statement.on_conflict_do_update(index_elements=list(conflict),
                                                set_={name: statement.excluded[name] for name in update})
    session.execute(statement, list(rows))


def values_sql(mark: str, width: int, rows: int) -> str:
    """`rows` parenthesised lists of `width` parameter marks: the VALUES of a driver-level multi-row INSERT."""
    row = f"({', '.join([mark] * width)})"
    return ", ".join([row] * rows)


def value_runs(rows: Sequence[Sequence[Any]], most: int,
               prefix: tuple[Any, ...] = ()) -> Iterator[tuple[int, list[tuple]]]:
    """`rows` as multi-row statements of `most` (a power of two), then half as many, ..., 1 rows: (rows a
    statement, each statement's parameters: `prefix`, then its rows' values one after another). A statement opens
    its cursors once for all its rows, where `executemany` of a one-row statement runs it once a row; the sizes
    give at most log2(most) + 1 statement texts, each prepared once per connection."""
    start, size = 0, most
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        end = start + (len(rows) - start) // size * size
        yield size, [(*prefix, *chain.from_iterable(rows[first:first + size])) for first in range(start, end, size)]
        start = end
