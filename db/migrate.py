"""Bring the database schema to the latest Alembic revision: `python -m db.migrate [--url URL]`.

The submitter and the workers call `ensure_schema()` on first use, so a fresh SQLite file or an empty
PostgreSQL database works without a separate step; in production run this once per deploy.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.session import database_url, get_engine

ROOT = Path(__file__).resolve().parents[1]
_done: set[str] = set()
_lock = threading.Lock()


def alembic_config() -> Config:
    ini = ROOT / "alembic.ini"  # absent from a non-editable install; it only configures logging
    cfg = Config(str(ini) if ini.exists() else None)
    cfg.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    return cfg


def _head(cfg: Config) -> str | None:
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    cfg = alembic_config()
    engine = get_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting on an empty database must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(url: str | None = None) -> None:
    """Upgrade to head once per process and URL; cheap (one SELECT) when already there."""
    url = database_url(url)
    with _lock:
        if url in _done:
            return
        cfg = alembic_config()
        if current_revision(url) != _head(cfg):
            try:
                upgrade(url)
            except Exception:
                # Another process (SQLite has no advisory lock) may have just done it.
                if current_revision(url) != _head(cfg):
                    raise
        _done.add(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m db.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: DATABASE_URL / settings)")
    parser.add_argument("--revision", default="head")
    args = parser.parse_args(argv)
    url = database_url(args.url)
    upgrade(url, args.revision)
    print(f"database at revision {current_revision(url)}: {get_engine(url).url.render_as_string(hide_password=True)}")


if __name__ == "__main__":
    main()
