"""Bring the database schema to the latest Alembic revision: `python -m db.migrate [--database-url URL]`.

`upgrade(url)` is the one way the schema changes, and only entry points call it, when they start: this command,
the commands of `db` and `worker` (through `upgraded_sessions`), `worker.dev` and each Celery worker process. So a
fresh SQLite file or an empty PostgreSQL database works without a separate step; in production run this command
once per deploy.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import cli
from db.session import make_engine, session_factory

HERE = Path(__file__).resolve().parent
_at_head: set[str] = set()
_lock = threading.Lock()


def alembic_config() -> Config:
    ini = HERE.parent / "alembic.ini"  # absent from a non-editable install; it only configures logging
    cfg = Config(str(ini) if ini.exists() else None)
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    return cfg


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _upgrade(engine: Engine, cfg: Config, revision: str, head: str | None) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting on an empty database must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
        if revision != "head" or MigrationContext.configure(conn).get_current_revision() != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema at `url` to `revision` (default: the latest).

    To head, once per process and URL: cheap (one SELECT) when already there, and safe when several processes
    start on an empty database at once.
    """
    with _lock:
        if revision == "head" and url in _at_head:
            return
        cfg = alembic_config()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        # A throwaway engine: a Celery worker upgrades before it forks, and its children must not inherit a pool.
        engine = make_engine(url)
        try:
            _upgrade(engine, cfg, revision, head)
        except Exception:
            # Another process (SQLite has no advisory lock) may have just done it.
            if revision != "head" or current_revision(url) != head:
                raise
        finally:
            engine.dispose()
        if revision == "head":
            _at_head.add(url)


def upgraded_sessions(url: str) -> sessionmaker[Session]:
    """For an entry point: sessions on `url`, its schema upgraded to the latest revision first."""
    upgrade(url)
    return session_factory(url)


def main(argv: list[str] | None = None) -> None:
    from settings import get_settings

    parser = cli.parser("python -m db.migrate", __doc__)
    cli.add_database_url(parser, get_settings())
    parser.add_argument("--revision", default="head",
                        help="the Alembic revision to upgrade to (default: head, the latest)")
    args = parser.parse_args(argv)
    upgrade(args.database_url, args.revision)
    url = make_url(args.database_url).render_as_string(hide_password=True)
    print(f"database at revision {current_revision(args.database_url)}: {url}")


if __name__ == "__main__":
    main()
