"""How every `python -m train...` command ends on an expected error: one clear line and exit code 2, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from model.network import WeightsUnavailableError

EXPECTED = (WeightsUnavailableError, FileNotFoundError, NotADirectoryError, ValueError)


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a command's `main`; weights that cannot be had, a missing or bad folder, a wrong value: `error: ...`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        main(argv)
    except EXPECTED as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
