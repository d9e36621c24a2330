"""db/ fixtures: sessions on a migrated database of the test's own, SQLite then PostgreSQL (the root conftest's
`database_url`, which the CLI tests pass as --database-url)."""

from __future__ import annotations

import pytest


@pytest.fixture
def sessions(database_url):
    from db.session import session_factory

    return session_factory(database_url)
