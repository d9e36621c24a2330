"""The web views' plain helpers (no server, no TensorFlow): the Batch tab's folder rule, payloads, verdicts (the
unknown message included), the model card."""

from __future__ import annotations

import base64
import os

import pytest

import demo
from model.card import card_markdown
from model.predict import Prediction
from webui import classify
from webui.allowed_roots import allowed_roots, resolve_folder


def test_resolve_folder_accepts_folders_inside_a_root(tmp_path):
    root = tmp_path / "data"
    (root / "photos" / "a").mkdir(parents=True)
    roots = allowed_roots(f"{root}{os.pathsep}{tmp_path / 'other'}")
    assert resolve_folder(str(root / "photos"), roots) == (root / "photos").resolve()
    assert resolve_folder("photos/a", roots) == (root / "photos" / "a").resolve()  # relative to a root
    assert resolve_folder(str(root), roots) == root.resolve()


@pytest.mark.parametrize("folder, message", [
    ("", "Enter a folder"),
    ("/etc", "not inside"),
    ("../secrets", "'..'"),
    ("photos/../../secrets", "'..'"),
    ("escape", "not inside"),  # a symlink inside the root that points outside it
    ("photos/missing", "No such folder"),
    ("notes.txt", "Not a folder"),
])
def test_resolve_folder_refuses_everything_else(tmp_path, folder, message):
    root = tmp_path / "data"
    (root / "photos").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "escape").symlink_to(tmp_path / "secrets", target_is_directory=True)
    (root / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=message):
        resolve_folder(folder, allowed_roots(str(root)))
    with pytest.raises(ValueError, match="No folders"):
        resolve_folder("photos", [])


def test_payload_source():
    assert classify.payload_source(None) is None
    assert classify.payload_source({"path": "/tmp/x.jpg", "url": None}) == "/tmp/x.jpg"
    data = b"\x89PNG..."
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert classify.payload_source({"path": None, "url": url}) == data


def test_verdict_says_not_sure_below_the_threshold():
    assert "Not sure" in classify.verdict(Prediction([("apple", 0.4), ("pear", 0.3), ("plum", 0.1)]), 0.5)
    assert classify.verdict(Prediction([("apple", 0.9), ("pear", 0.05)]), 0.5).startswith("### apple (90%)")


def test_verdict_says_unknown_in_words_a_visitor_understands():
    p = Prediction([("red_grapefruit", 0.41), ("apple", 0.3)], unknown=True, unknown_score=7.5)
    text = classify.verdict(p, 0.5, known=21, things="fruits")
    assert "This doesn't look like any of the 21 fruits I know (closest: red grapefruit, 41%)" in text
    assert "Not sure" not in text  # unknown wins over a low confidence: it says more
    sure = Prediction([("apple", 0.95)], unknown=True, unknown_score=9.0)  # a confident answer can be unknown too
    assert "closest: apple, 95%" in classify.verdict(sure, 0.5, known=3, things="fruits")


def test_model_card_and_missing_bundle(tmp_path, shipped_bundle):
    from model.bundle import BundleConfig, read_card

    missing = classify.model_problem(tmp_path / "nope")
    assert "No model bundle" in missing and "--model" in missing
    assert classify.model_problem(shipped_bundle) is None
    text = card_markdown(shipped_bundle)  # read from the bundle's files; the network is never loaded
    assert ", ".join(BundleConfig.read(shipped_bundle).labels) in text
    assert f"**Training data:** {read_card(shipped_bundle)['dataset']}" in text
    app = demo.build_demo(tmp_path / "nope")  # builds (and would serve) with a clear notice, not a traceback
    (card,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "model-card"]
    assert "not available" in card.value and "No model bundle" in card.value


def test_examples_ship_with_their_license():
    paths = classify.example_paths()
    assert len(paths) >= 21 * 2
    assert (demo.EXAMPLES_DIR / "NOTICE.md").is_file()
    assert len({os.path.basename(os.path.dirname(p)) for p in paths[:21]}) == 21  # first page: every class


def test_the_repository_is_a_space_as_it_stands():
    """What `make space-check` checks before it installs anything: the README's front matter names the pinned
    Gradio, Python 3.11 and demo.py, and model.keras is the real file (not a Git LFS pointer)."""
    from benchmarks import space_check
    from settings import ROOT

    space_check.check_front_matter(ROOT)
    pushed = space_check.pushed_files()
    assert {"demo.py", "requirements.txt", "webui/upload.py", "model/fruits-densenet121/model.keras"} <= set(pushed)
