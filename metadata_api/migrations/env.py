"""Alembic environment: migrates through the engine the caller passed in (`config.attributes["engine"]`).

Several API processes may start at once: on SQLite the migration transaction begins with BEGIN IMMEDIATE
(the write lock is held before the current revision is read); on PostgreSQL it takes an advisory lock first.
Either way the first process migrates and the others then find the database at head.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text
from trainmon.metadata_api.db import for_writes, make_engine
from trainmon.metadata_api.models import Base

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK_ID = 0x7472_6169  # "trai": pg_advisory_xact_lock key shared by every trainmon process


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    return engine if engine is not None else make_engine(config.get_main_option("sqlalchemy.url"))


def run_migrations_online() -> None:
    engine = for_writes(_engine())
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        # transactional_ddl: one transaction for the whole upgrade on SQLite too (Alembic's default there is a
        # commit after each revision, which lets a waiting process read a revision between two of them and apply
        # the next one twice).
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                          transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
