"""How every `python -m train...` command runs: frameworks quiet, and an expected error ends in `cli.fail`
(one line `error: ...`, exit code 2), never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cli
from model.network import WeightsUnavailableError

EXPECTED = (WeightsUnavailableError, FileNotFoundError, NotADirectoryError, ValueError)


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a command's `main`; weights that cannot be had, a missing or bad folder, a wrong value: `error: ...`."""
    cli.quiet_frameworks()
    try:
        main(argv)
    except EXPECTED as exc:
        cli.fail(str(exc))
