"""db/ fixtures: sessions on a migrated database of the test's own, SQLite then PostgreSQL (the root conftest's
`database_url`, which the CLI tests pass as --database-url)."""

from __future__ import annotations

import io

import pytest


@pytest.fixture
def sessions(database_url):
    from db.session import session_factory

    return session_factory(database_url)


@pytest.fixture
def fails(capsys):
    """`fails(main, argv)` runs a command's `main` that must end on `cli.fail`, checks exit code 2 and one line
    `error: ...` on stderr, and returns that line."""
    def run(main, argv: list[str]) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv, out=io.StringIO())
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    return run
