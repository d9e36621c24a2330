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
    assert "This doesn't look like any of the 21 fruits I know. Nearest: red grapefruit." in text
    assert "Not sure" not in text  # unknown wins over a low confidence: it says more
    sure = Prediction([("apple", 0.95)], unknown=True, unknown_score=9.0)  # a confident answer can be unknown too
    text = classify.verdict(sure, 0.5, known=3, things="fruits")
    # No percentage anywhere: the softmax over the known classes is not how sure the model is about the photo.
    assert "Nearest: apple." in text and "not answers" in text and "%" not in text and "95" not in text
    unknown, known = classify.chart({"apple": 0.95}, True, 5), classify.chart({"apple": 0.95}, False, 5)
    assert (unknown.label, unknown.show_heading) == (classify.NOT_AN_ANSWER, False)  # no big "apple" on top
    assert (known.label, known.show_heading) == ("Top 5", True)


def test_upload_rows_say_unknown_in_words_and_keep_the_confidence_in_the_csv():
    from webui.upload import COLUMNS, Item, result_row, table_row

    p = Prediction([("kiwi", 0.998), ("apple", 0.001)], unknown=True, unknown_score=7.5)
    row = result_row(Item("milk.jpg", "milk.jpg"), p, 21, "fruits")
    assert row["label"] == "not one of the 21 fruits I know (nearest: kiwi)" and row["nearest"] == "kiwi"
    assert row["confidence"] == 0.998 and row["unknown"] == "true" and set(row) <= set(COLUMNS)
    assert table_row(row, None)[2:5] == ["not one of the 21 fruits I know (nearest: kiwi)", None, "yes"]
    sure = result_row(Item("k.jpg", "k.jpg"), Prediction([("red_grapefruit", 0.9)], unknown_score=0.1), 21, "fruits")
    assert (sure["label"], sure["nearest"]) == ("red_grapefruit", "red_grapefruit")
    assert table_row(sure, None)[2:5] == ["red grapefruit", 0.9, "no"]


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

