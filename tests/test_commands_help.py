"""Every command line's `--help`, typed as a user types it: it describes every option and argument, and prints no
framework log line (TensorFlow's, absl's...) before or after it.

The commands are found, not listed: every module of the app's packages with a `__main__` block, `python -m train`
and `python demo.py`, so a new command is checked the day it is added.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import ROOT

PACKAGES = ("model", "db", "jobs", "worker", "train", "webui")
ENTRY = re.compile(r'^if __name__ == "__main__":', re.M)


def commands() -> list[list[str]]:
    found = [["-m", "train"], ["demo.py"]]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__main__.py" and ENTRY.search(path.read_text()):
                found.append(["-m", ".".join(path.relative_to(ROOT).with_suffix("").parts)])
    return found


def undescribed(help_text: str) -> list[str]:
    """The options and arguments of an argparse help text that have no description."""
    missing, entry = [], None
    for line in help_text.splitlines():
        if not line.startswith("  ") or not line.strip():  # a section heading, the usage, a blank line
            if entry:
                missing.append(entry)
            entry = None
            continue
        if entry and len(line) - len(line.lstrip()) > 4:  # the help of the entry above, on the next line
            entry = None
            continue
        if re.match(r"^  \S", line):  # an option or argument: "  --flag X    its help" or alone on the line
            if entry:
                missing.append(entry)
            name, _, rest = line.strip().partition("  ")
            entry = None if rest.strip() else name
    return missing + ([entry] if entry else [])


def test_the_check_sees_an_undescribed_option():
    text = ("usage: x [-h] [--a A] [--b]\n\noptions:\n  -h, --help  show this help\n  --a A\n  --b         does b\n"
            "  --long-option-name LONG_OPTION_NAME\n                        described below\n  --c\n")
    assert undescribed(text) == ["--a A", "--c"]


def _help(args: list[str]) -> subprocess.CompletedProcess:
    # As a user's shell has it: without the test suite's TF_CPP_MIN_LOG_LEVEL.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    return subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    found = commands()
    with ThreadPoolExecutor(max_workers=2) as pool:  # interpreter starts dominate: two at a time
        return {" ".join(c): done for c, done in zip(found, pool.map(_help, found), strict=True)}


def test_every_command_is_found(helps):
    assert {"-m worker.submit", "-m worker.status", "-m db.report", "-m db.migrate", "-m train.distill",
            "-m train.evaluate", "-m train", "demo.py"} <= set(helps)


def test_every_help_describes_every_option_and_prints_no_log_line(helps):
    problems = []
    for command, done in helps.items():
        if done.returncode != 0 or not done.stdout.startswith("usage: "):
            problems.append(f"python {command} --help: exit {done.returncode}, stdout {done.stdout[:80]!r}")
        if done.stderr.strip():
            problems.append(f"python {command} --help printed on stderr: {done.stderr.strip().splitlines()[0]!r}")
        if missing := undescribed(done.stdout):
            problems.append(f"python {command} --help: no description for {', '.join(missing)}")
    assert problems == [], "\n".join(problems)
