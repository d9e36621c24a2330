"""How every `python -m train...` command runs: frameworks quiet, and an expected error ends in `cli.fail`
(one line `error: ...`, exit code 2), never a traceback; and the one progress bar of a multi-step command."""

from __future__ import annotations

import argparse
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


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """`cli.parser` for a module whose docstring starts `Title: ...` / `Description: ...` (the keras-io header):
    the two lines become the one-line description, `Title: Description`."""
    head, sep, rest = (doc or "").strip("\n").partition("\n\n")
    if head.startswith("Title: "):
        head = " ".join(head.removeprefix("Title: ").replace("\nDescription: ", ": ", 1).split())
    return cli.parser(prog, head + sep + rest)


class ProgressBar:
    """A `progress(fraction, message)` callback (train.head, train.teach) as one tqdm bar with its ETA on stderr;
    started by the first step, so that an error found before any work is the only line on stderr."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def __call__(self, fraction: float, message: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=1000, desc=self.desc, leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}")
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))
        self.bar.set_postfix_str(message[:60])
        if fraction >= 1.0:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
