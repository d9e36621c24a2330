"""Transitional: moved to tests/helpers/databases.py (sessions on a migrated database are the `sessions` and
`database_url` fixtures). Kept only while the review tests under tests/demo/ (being written in parallel) import it
from here; delete this file once they import tests.helpers.databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.helpers.databases import LABELS, add_job, row, scratch_database, url_of

__all__ = ["LABELS", "add_job", "migrated_sessions", "row", "url_of"]


def migrated_sessions(kind: str, tmp_path: Path) -> Iterator:
    """Sessions on a migrated 'sqlite' or 'postgres' database, for a module's fixture to yield from."""
    from db.session import session_factory

    with scratch_database(kind, tmp_path) as url:
        yield session_factory(url)
