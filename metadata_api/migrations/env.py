"""Alembic environment: migrates through the engine the caller passed in (`config.attributes["engine"]`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine
from trainmon.metadata_api.db import make_engine
from trainmon.metadata_api.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    return engine if engine is not None else make_engine(config.get_main_option("sqlalchemy.url"))


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
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
