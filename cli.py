"""The one command-line convention every `python -m ...` command follows.

- `parser(prog, doc)`: the parser, described by the first paragraph of the command's docstring, the rest (usage
  examples) shown after the options as written;
- `add_database_url(p, settings)` / `add_redis_url(p, settings)`: the same `--database-url` and `--redis-url`
  flags everywhere, the settings (env DATABASE_URL / REDIS_URL) as defaults;
- `fail(message)`: the one error path, a single line `error: <message>` on stderr and exit code 2 (argparse's own
  code for a bad command line), never a traceback for an expected error;
- `quiet_frameworks()`: called first by a command that may load TensorFlow, so that the frameworks' own log lines
  do not come before the command's first line of output.

TensorFlow 2.21 prints its oneDNN notice at import whatever TF_CPP_MIN_LOG_LEVEL says, so a command also parses its
arguments before importing anything that loads TensorFlow: `--help` and a bad flag never pay for, nor print, it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

__all__ = ["add_database_url", "add_redis_url", "fail", "parser", "quiet_frameworks"]

# Environment read by TensorFlow's C++ runtime, oneDNN, gRPC and absl when they first load: set only when unset,
# so that a user who asks for their logs (TF_CPP_MIN_LOG_LEVEL=0) still gets them.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # C++ INFO and WARNING lines (cpu_feature_guard, ...); errors still show
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}


def quiet_frameworks() -> None:
    """Set the frameworks' log levels to errors only; effective only before TensorFlow (or tf2onnx) is imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser: `prog` as the user types it, the docstring's first paragraph as the description and the
    remaining paragraphs (examples, outputs) after the options, with their line breaks kept."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    epilog = rest.strip("\n").rstrip() or None  # strip("\n"), not strip(): an example's indent is kept
    return argparse.ArgumentParser(prog=prog, description=" ".join(head.split()), epilog=epilog,
                                   formatter_class=_Formatter)


class _Formatter(argparse.HelpFormatter):
    """Wraps the description and the options' help; keeps the epilog's lines (command examples) as written."""

    def add_text(self, text: str | None) -> None:
        if text and "\n" in text:  # only the epilog has line breaks: `parser` joins the description into one line
            self._add_item(lambda t: t + "\n", [text])
        else:
            super().add_text(text)


def add_database_url(p: argparse.ArgumentParser, settings: Any) -> None:
    """`--database-url`, defaulting to `settings.database_url` (env DATABASE_URL)."""
    # The help names where the default comes from, never the URL itself: it may hold a password.
    p.add_argument("--database-url", default=settings.database_url, metavar="URL",
                   help="SQLAlchemy URL of the results database (default: env DATABASE_URL or the settings' "
                        "SQLite file)")


def add_redis_url(p: argparse.ArgumentParser, settings: Any) -> None:
    """`--redis-url`, defaulting to `settings.redis_url` (env REDIS_URL)."""
    p.add_argument("--redis-url", default=settings.redis_url, metavar="URL",
                   help="Redis URL of the Celery broker (default: env REDIS_URL or the settings' localhost URL)")


def fail(message: str) -> NoReturn:
    """End a command on an expected error: one line `error: <message>` on stderr, exit code 2."""
    first_line = " ".join(str(message).split())  # one line, even for a multi-line exception text
    print(f"error: {first_line}", file=sys.stderr)
    sys.exit(2)
