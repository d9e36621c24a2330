"""The bundle the demo serves, and the versions it can switch to: the one it started with and every taught bundle.

`ServedModel` stands where the Classify and Upload tabs used to hold one `model.explain.Explainer`: it has the
same `model_dir`, `load`, `predict` and `classify`, and hands each call to the current bundle's Explainer, so a
switch (the Teach view's model picker, or a teach that finished) changes what both tabs serve from the next request
on. Each bundle's network loads once and stays cached (the few most recently served ones), so switching back is
instant; a request already running finishes on the bundle it started with.

Versions are the bundle the demo started with (`--model`, MODEL_DIR) and every bundle folder under MODELS_DIR
(`train.teach` writes one per model_version), newest first. A client switches by model_version, never by path: only
a listed folder can be served.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.bundle import CARD_FILE, CONFIG_FILE, MODEL_FILE
from model.card import card_markdown
from model.explain import Explainer
from model.predict import TOP_K, Prediction

CACHED = 3  # networks kept loaded (the served one included): switching back among them does not reload


@dataclass(frozen=True)
class Version:
    """One bundle the demo can serve, as the model picker lists it."""

    model_version: str
    path: Path
    parent_version: str = ""
    taught: dict[str, int] = field(default_factory=dict)  # photos taught per class (a taught bundle's card)
    new_classes: tuple[str, ...] = ()
    classes: int = 0
    created: str = ""  # UTC, when the bundle was written
    started_with: bool = False  # the bundle the demo was started with (--model / MODEL_DIR)

    def taught_words(self) -> str:
        """"apple +5, banana +3 (new: banana)", or "" for a bundle nobody taught."""
        counts = ", ".join(f"{label} +{n}" for label, n in sorted(self.taught.items()))
        new = f" (new: {', '.join(self.new_classes)})" if self.new_classes else ""
        return counts + new


def model_problem(model_dir: Path) -> str | None:
    """Why the bundle cannot be used, or None when it looks complete (checked without loading it)."""
    if not (model_dir / CONFIG_FILE).is_file() or not (model_dir / MODEL_FILE).is_file():
        return (f"No model bundle at `{model_dir}` (it needs `config.json` and `model.keras`). "
                "The shipped fruit model may not be trained yet: run `make train-fruits` and copy its `bundle/` "
                "there, or start the demo with `--model PATH`.")
    return None


def read_version(bundle_dir: Path, started_with: bool = False) -> Version | None:
    """The bundle's listing from its config.json and card.json (no model load); None when it is no bundle."""
    config_path = bundle_dir / CONFIG_FILE
    if not config_path.is_file() or not (bundle_dir / MODEL_FILE).is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
        card_path = bundle_dir / CARD_FILE
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    except (OSError, ValueError):
        return None  # a folder being written, or a broken one: not offered
    # train.teach's card: {"taught": {"photos": {class: n}, "new_classes": [...], ...}, "parent_version": ...}
    taught = card.get("taught") if isinstance(card.get("taught"), dict) else {}
    photos = taught.get("photos") if isinstance(taught.get("photos"), dict) else {}
    created = datetime.fromtimestamp(config_path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return Version(model_version=str(config.get("model_version") or ""), path=bundle_dir,
                   parent_version=str(config.get("parent_version") or card.get("parent_version") or ""),
                   taught={str(k): int(v) for k, v in photos.items()},
                   new_classes=tuple(taught.get("new_classes") or ()), classes=len(config.get("labels") or ()),
                   created=created, started_with=started_with)


def list_versions(started_with: Path, models_dir: Path) -> list[Version]:
    """The bundles under `models_dir`, newest first, then the one the demo started with (unless it is one of them).
    Hidden folders (a teach still writing its bundle) are skipped."""
    found = []
    if models_dir.is_dir():
        for child in models_dir.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                version = read_version(child)
                if version is not None and version.model_version:
                    found.append(version)
    found.sort(key=lambda v: (v.created, v.model_version), reverse=True)
    start = read_version(started_with, started_with=True)
    if start is not None:
        found = [v for v in found if v.path.resolve() != started_with.resolve()] + [start]
    return found


class ServedModel:
    """The current bundle's Explainer for each request, switchable while the app runs (thread-safe)."""

    def __init__(self, model_dir: str | os.PathLike, models_dir: str | os.PathLike, **load_options: Any):
        """`load_options` go to every Explainer (`load_classifier`'s runtime, threads, cache, max_pixels)."""
        self.started_with = Path(model_dir)
        self.models_dir = Path(models_dir)
        self._options = load_options
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, Explainer] = OrderedDict()
        self._known: dict[Path, int] = {}
        self._current = self._explainer(self.started_with)

    def _explainer(self, path: Path) -> Explainer:
        key = path.resolve()
        with self._lock:
            if key not in self._cache:
                self._cache[key] = Explainer(path, **self._options)
            self._cache.move_to_end(key)
            return self._cache[key]

    def _trim(self) -> None:
        with self._lock:
            while len(self._cache) > CACHED:
                oldest = next(iter(self._cache))
                if self._cache[oldest] is self._current:
                    self._cache.move_to_end(oldest)
                    continue
                del self._cache[oldest]

    # -- what the tabs ask for on each request ---------------------------------------------------------------------

    @property
    def current(self) -> Explainer:
        return self._current

    @property
    def model_dir(self) -> Path:
        return self._current.model_dir

    def load(self) -> tuple:
        return self._current.load()

    def predict(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, explain: bool = True
                ) -> list[Prediction]:
        return self._current.predict(images, top_k, explain)

    def classify(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, thumbnail_side: int = 64
                 ) -> list:
        return self._current.classify(images, top_k, thumbnail_side)

    def known(self) -> int:
        """How many classes the served bundle has (0 when it cannot be read); asked on every verdict, so each
        bundle's count is read once (a bundle folder never changes once written)."""
        path = self.model_dir
        if path not in self._known:
            found = read_version(path)
            if found is None:
                return 0
            self._known[path] = found.classes
        return self._known[path]

    def card(self) -> str:
        """The served bundle's model card as Markdown, or why there is no model."""
        if problem := model_problem(self.model_dir):
            return f"### Model\n**The model is not available.** {problem}"
        try:
            return card_markdown(self.model_dir)
        except (OSError, ValueError) as exc:
            return f"### Model\n**The model card cannot be read:** {exc}"

    # -- the model picker ------------------------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        return list_versions(self.started_with, self.models_dir)

    def version(self) -> str:
        """The served bundle's model_version."""
        found = read_version(self.model_dir)
        return found.model_version if found else ""

    def use(self, model_version: str) -> Version:
        """Serve the listed bundle of that model_version (its network loads here, once, so that no visitor waits
        for it and a bundle that cannot load is never served); LookupError when no listed bundle has it."""
        wanted = (model_version or "").strip()
        match = [v for v in self.versions() if v.model_version == wanted]
        if not wanted or not match:
            raise LookupError(f"no model version {wanted!r} here (see the list of versions)")
        return self.use_path(match[0].path, match[0])

    def use_path(self, path: Path, version: Version | None = None) -> Version:
        """Serve the bundle at `path` (a bundle the demo itself wrote or listed)."""
        explainer = self._explainer(path)
        explainer.load()
        self._current = explainer
        self._trim()
        return version or read_version(path) or Version("", path)
