"""Which server folders a web user may submit as a batch job: the allow-list (settings.demo_allowed_roots).

A folder is accepted only when its real path (symlinks resolved) is inside one of the roots, so a link inside a
root that points outside is refused; `..` is refused outright.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def allowed_roots(spec: str) -> list[Path]:
    """The os.pathsep-separated folders of `spec` as real, absolute paths."""
    return [Path(p).expanduser().resolve() for p in spec.split(os.pathsep) if p.strip()]


def resolve_folder(folder: str, roots: Sequence[Path]) -> Path:
    """The real path of `folder` when it is an existing folder inside one of `roots`, else ValueError.

    A relative path is looked up under each root in turn.
    """
    text = (folder or "").strip()
    if not text:
        raise ValueError("Enter a folder path.")
    if not roots:
        raise ValueError("No folders are open to batch jobs (set DEMO_ALLOWED_ROOTS).")
    raw = Path(text).expanduser()
    if ".." in raw.parts:
        raise ValueError("Paths with '..' are not accepted.")
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    inside = False
    for candidate in candidates:
        real = candidate.resolve()
        if not any(real == root or real.is_relative_to(root) for root in roots):
            continue
        inside = True
        if real.is_dir():
            return real
        if real.exists():
            raise ValueError(f"Not a folder: {text}")
    if inside:
        raise ValueError(f"No such folder: {text}")
    where = ", ".join(f"`{r}`" for r in roots)
    raise ValueError(f"`{text}` is not inside a folder open to batch jobs ({where}).")
