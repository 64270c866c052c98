"""INSERT ... ON CONFLICT for SQLite and PostgreSQL (both speak it; SQLAlchemy has one construct per dialect)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
