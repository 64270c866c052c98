"""Server commands of `trainmon` (added by `trainmon.client.cli` when the [server] extra is installed).

    trainmon serve [--host H] [--port P] [--insecure]   run the API under uvicorn (default 127.0.0.1:5000)
    trainmon db upgrade                                  apply the migrations (alembic upgrade head)
    trainmon db current                                  print the database's migration revision
    trainmon token create --project P --scope write      print a new API token once (only its hash is stored)
    trainmon prune [--days D] [--batch-size N]           delete metric points (and ingest records) older than D days

Every command reads the settings from the environment and `.env` (DATABASE_URL, ...); `--database-url`
overrides DATABASE_URL. A failure ends with one line on stderr, credentials masked (`redact`), and status 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import migrations
from .auth import BindNotAllowed, create_token
from .db import make_engine, write_sessions
from .models import TokenScope
from .redact import redact
from .services import retention
from .settings import Settings


def add_commands(subparsers: Any) -> None:
    """Add `serve`, `db`, `token` and `prune` to the `trainmon` command's subparsers."""
    serve = subparsers.add_parser("serve", help="run the metadata API (uvicorn)", description=_serve.__doc__)
    serve.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 5000)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback bind while no API token exists (anyone reaching it can write)")
    _database_option(serve)
    serve.set_defaults(func=_guarded(_serve))

    db = subparsers.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply every migration (alembic upgrade head)")
    _database_option(upgrade)
    upgrade.set_defaults(func=_guarded(_db_upgrade))
    current = db_commands.add_parser("current", help="print the database's migration revision")
    _database_option(current)
    current.set_defaults(func=_guarded(_db_current))

    token = subparsers.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_commands.add_parser("create", help="create a token for a project and print it (once)")
    create.add_argument("--project", required=True, help="project name (created when it does not exist)")
    create.add_argument("--scope", required=True, choices=[scope.value for scope in TokenScope])
    create.add_argument("--description", help="what the token is for")
    _database_option(create)
    create.set_defaults(func=_guarded(_token_create))

    prune = subparsers.add_parser("prune", help="delete metric points and ingest records older than the retention "
                                                "period")
    prune.add_argument("--days", type=float, help="retention in days (default: METRICS_RETENTION_DAYS)")
    prune.add_argument("--batch-size", type=int, help="rows a transaction (default: PRUNE_BATCH_SIZE)")
    _database_option(prune)
    prune.set_defaults(func=_guarded(_prune))


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="overrides DATABASE_URL")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {"database_url": getattr(args, "database_url", None), **extra}
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def run_guarded(command: Callable[[], int]) -> int:
    """Run `command`: bad settings and database errors end it with a one-line message and exit status 2, anything
    else with its traceback and status 1; credentials are masked in both (`trainmon serve`, `python -m`)."""
    try:
        return command()
    except ValidationError as error:  # its str() would show the input value: a DATABASE_URL with its password
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        return _fail(f"bad settings: {problems}")
    except (BindNotAllowed, ValueError) as error:
        return _fail(str(error))
    except SQLAlchemyError as error:
        return _fail(f"database error: {error.__class__.__name__}: {str(error).splitlines()[0]}")
    except Exception:  # noqa: BLE001 - shown, but never with a password in it
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return run_guarded(lambda: command(args))

    return run


def _fail(message: str) -> int:
    print(f"trainmon: {redact(message)}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    """Run the API under uvicorn; a non-loopback bind needs an API token or --insecure."""
    from .app import serve

    serve(_settings(args, host=args.host, port=args.port), insecure=args.insecure)
    return 0


def _migrated_engine(settings: Settings) -> Engine:
    engine = make_engine(settings.database_url, settings.sqlite_busy_timeout_ms)
    migrations.upgrade(engine)
    return engine


def _db_upgrade(args: argparse.Namespace) -> int:
    engine = _migrated_engine(_settings(args))
    try:
        print(f"database at revision {migrations.current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _db_current(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = make_engine(settings.database_url, settings.sqlite_busy_timeout_ms)
    try:
        print(migrations.current_revision(engine) or "none (empty database: run `trainmon db upgrade`)")
    finally:
        engine.dispose()
    return 0


def _token_create(args: argparse.Namespace) -> int:
    engine = _migrated_engine(_settings(args))
    try:
        with write_sessions(engine)() as session:
            token = create_token(session, args.project, args.scope, args.description)
            session.commit()
    finally:
        engine.dispose()
    print(f"created a {args.scope} token for project {args.project!r}; it is shown once, only its hash is stored:")
    print(token)
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = _settings(args)
    days = settings.metrics_retention_days if args.days is None else args.days
    batch_size = settings.prune_batch_size if args.batch_size is None else args.batch_size
    if days <= 0:
        return _fail(f"--days must be > 0, got {days}")
    engine = _migrated_engine(settings)
    try:
        pruned = retention.prune(write_sessions(engine), days, batch_size)
    finally:
        engine.dispose()
    print(f"pruned {pruned.metric_points} metric points and {pruned.ingest_batches} ingest records older than "
          f"{days:g} days")
    return 0
