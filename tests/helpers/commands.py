"""A command line's own parser, run alone: `python -m tests.helpers.commands` reads a JSON list of
[label, argv, environment] on stdin and prints one JSON object {label: {"parsed": options, "settings": ...} or
{"error": message}}.

- `python -m MODULE ...` and `python SCRIPT ...` (SCRIPT in the checkout) run as `__main__` until their argparse
  parser returns, and stop there: `ArgumentParser.parse_args` is replaced by one that raises with the options.
  A flag the program does not accept ends in argparse's own error (exit 2), reported with its message.
- `celery -A APP COMMAND ...`: Celery's click command parses the rest with the app loaded (flower hands its
  options to tornado, which parses them here too).

Nothing runs past parsing: no server starts, no database or broker is reached. Each entry runs with exactly its
environment (plus PATH and HOME), and `settings` is what `Settings()` reads from it, so a test can see which
environment names the settings really take. One process for all entries: each interpreter start costs seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import warnings
from typing import Any

from tests.helpers import ROOT


class _Parsed(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, options: dict[str, Any]):
        self.options = options


def _stop_after_parsing(self: argparse.ArgumentParser, args=None, namespace=None) -> argparse.Namespace:
    raise _Parsed(vars(_REAL_PARSE_ARGS(self, args, namespace)))


_REAL_PARSE_ARGS = argparse.ArgumentParser.parse_args


def _python(argv: list[str]) -> dict[str, Any]:
    module = argv[2] if argv[1] == "-m" else None
    sys.argv = [module or argv[1], *argv[3 if module else 2:]]
    argparse.ArgumentParser.parse_args = _stop_after_parsing
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # runpy's "found in sys.modules" when a module ran before
            if module:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(ROOT / argv[1]), run_name="__main__")  # the image's WORKDIR is the checkout
    except _Parsed as parsed:
        return {"parsed": parsed.options}
    except SystemExit as exc:
        return {"error": f"exit {exc.code}: {err.getvalue().strip()[-500:]}"}
    except ImportError as exc:  # no such module or script import
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        argparse.ArgumentParser.parse_args = _REAL_PARSE_ARGS
    return {"error": "the program ran to its end without parsing a command line"}


def _celery(argv: list[str]) -> dict[str, Any]:
    import click
    from celery.app.utils import find_app
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    at = argv.index("-A")
    app, name, rest = argv[at + 1], argv[at + 2], argv[at + 3:]
    if name not in celery.commands:
        return {"error": f"celery has no command {name!r}"}
    parent = click.Context(celery, info_name="celery",
                           obj=CLIContext(app=find_app(app), no_color=True, workdir=None, quiet=True))
    try:
        ctx = celery.commands[name].make_context(name, list(rest), parent=parent)
    except click.ClickException as exc:
        return {"error": exc.format_message()}
    options = dict(ctx.params)
    if name == "flower":
        import flower.options  # noqa: F401 - defines the tornado options flower's command line sets
        from tornado.options import Error, parse_command_line
        from tornado.options import options as tornado_options

        try:
            with contextlib.redirect_stderr(io.StringIO()):  # tornado prints its help before the error
                parse_command_line(["flower", *options.pop("tornado_argv")], final=False)
        except Error as exc:
            return {"error": str(exc)}
        options.update(port=tornado_options.port, address=tornado_options.address)
    return {"parsed": options}


def parse(argv: list[str], environment: dict[str, str]) -> dict[str, Any]:
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    os.environ.clear()
    os.environ.update({**base, **environment})
    if "settings" in sys.modules:
        sys.modules["settings"].get_settings.cache_clear()  # entry points read the cached settings
    if argv[0] == "celery":
        result = _celery(argv)
    elif argv[0] == "python":
        result = _python(argv)
    else:
        return {"error": f"not a command of this project: {argv}"}
    from settings import Settings

    return {**result, "settings": Settings().model_dump(mode="json")}


def main() -> None:
    results = {label: parse(argv, env) for label, argv, env in json.load(sys.stdin)}
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
