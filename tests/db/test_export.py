"""`python -m db.export` (issue 11): layout, manifest, name clashes, hard links, filters, refusals, and an export
that trains a tiny model."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

from db.content_hash import sha256_file
from db.reviews import set_review
from tests.helpers.databases import add_job, row, scratch_database, url_of

COLOURS = {"apple": (200, 30, 30), "banana": (220, 210, 40), "cherry": (120, 10, 60)}


def _image(path, colour, seed):
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.integers(-25, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


def _photos_job(sessions, tmp_path, job_id="job1"):
    """A job on real files: two `pic.png` the model calls apple, reviews that correct, confirm and skip."""
    src = tmp_path / "photos"
    files = {  # name: (model label, confidence, colour)
        "one/pic.png": ("apple", 0.9, "apple"),
        "two/pic.png": ("apple", 0.8, "apple"),
        "b.png": ("banana", 0.3, "cherry"),
        "c.png": ("banana", 0.7, "banana"),
        "d.png": ("cherry", 0.2, "cherry"),
        "e.png": ("apple", 0.4, "banana"),
    }
    rows = []
    for i, (name, (label, conf, colour)) in enumerate(files.items()):
        path = _image(src / name, COLOURS[colour], i)
        rows.append(row(path, label, conf, sha256_file(path)))
    rows.append(row(str(src / "bad.png"), None, None, None, error="cannot identify image file"))
    add_job(sessions, job_id, rows, folder=str(src))
    with sessions() as session:
        set_review(session, job_id, str(src / "b.png"), "cherry", "ann")  # a correction
        set_review(session, job_id, str(src / "e.png"), None, "ann")  # none of these: left out
        session.commit()
    return src


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _export(sessions, *args):
    from db.export import main

    out = io.StringIO()
    try:
        code = main([*args, "--database-url", url_of(sessions)], out=out)
    except SystemExit as exc:  # cli.fail or argparse: one line on stderr, exit code 2
        code = exc.code
    return code, out.getvalue()


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.csv")


def test_export_layout_manifest_clashes_and_links(sessions, tmp_path):
    src = _photos_job(sessions, tmp_path)
    out = tmp_path / "export"
    code, text = _export(sessions, "job1", "--out", str(out))
    assert code == 0, text
    h1, h2 = sha256_file(src / "one/pic.png"), sha256_file(src / "two/pic.png")
    assert _tree(out) == sorted([f"apple/pic-{h1[:8]}.png", f"apple/pic-{h2[:8]}.png", "banana/c.png",
                                 "cherry/b.png", "cherry/d.png"])
    assert "exported 5 images in 3 classes" in text and "(5 hard links, 0 copies)" in text

    manifest = {r["file"]: r for r in _manifest(out)}
    assert set(manifest) == set(_tree(out))
    b = manifest["cherry/b.png"]
    assert (b["label"], b["model_label"], b["reviewed_label"], b["reviewer"]) == ("cherry", "banana", "cherry", "ann")
    assert b["source"] == str(src / "b.png") and b["sha256"] == sha256_file(src / "b.png")
    assert float(b["confidence"]) == pytest.approx(0.3)
    d = manifest["cherry/d.png"]
    assert (d["label"], d["model_label"], d["reviewed_label"], d["job_id"]) == ("cherry", "cherry", "", "job1")
    for name, entry in manifest.items():  # hard links: the same inode as the source, same bytes
        assert os.stat(out / name).st_ino == os.stat(entry["source"]).st_ino
        assert sha256_file(out / name) == entry["sha256"]
    assert not list(tmp_path.glob(".export.partial-*"))


def test_export_filters_and_copies(sessions, tmp_path):
    src = _photos_job(sessions, tmp_path)
    code, text = _export(sessions, "job1", "--out", str(tmp_path / "confident"), "--min-confidence", "0.5", "--copy")
    assert code == 0, text
    # d (0.2) goes; b (0.3) stays because a person labelled it.
    assert [p.split("/")[0] for p in _tree(tmp_path / "confident")] == ["apple", "apple", "banana", "cherry"]
    assert "cherry/b.png" in _tree(tmp_path / "confident") and "(0 hard links, 4 copies)" in text
    copied = tmp_path / "confident" / "cherry" / "b.png"
    assert os.stat(copied).st_ino != os.stat(src / "b.png").st_ino
    assert sha256_file(copied) == sha256_file(src / "b.png")

    code, text = _export(sessions, "job1", "--out", str(tmp_path / "reviewed"), "--reviewed-only")
    assert code == 0, text
    assert _tree(tmp_path / "reviewed") == ["cherry/b.png"]
    assert "note: python -m train needs at least 2 classes" in text


def test_export_refusals_write_nothing(sessions, tmp_path, capsys):
    src = _photos_job(sessions, tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert _export(sessions, "job1", "--out", str(busy))[0] == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    assert _export(sessions, "nojob", "--out", str(tmp_path / "x"))[0] == 2
    assert "no job with id 'nojob'" in capsys.readouterr().err
    with sessions() as session:  # with b marked none of these, no image has a reviewed label
        set_review(session, "job1", str(src / "b.png"), None, "ann")
        session.commit()
    assert _export(sessions, "job1", "--out", str(tmp_path / "x"), "--reviewed-only")[0] == 2
    assert "has no image to export with these filters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert _export(sessions, "job1", "--out", str(tmp_path / "x"), "--min-confidence", "1.5")[0] == 2
    assert "not a confidence between 0 and 1" in capsys.readouterr().err


def test_changed_or_missing_sources_are_left_out(sessions, tmp_path, capsys):
    src = _photos_job(sessions, tmp_path)
    _image(src / "c.png", COLOURS["apple"], 99)  # edited since the job: its label is about other pixels
    (src / "d.png").unlink()
    code, _ = _export(sessions, "job1", "--out", str(tmp_path / "export"))
    assert code == 0
    err = capsys.readouterr().err
    assert f"left out {src / 'c.png'}: its content changed since the job" in err
    assert f"left out {src / 'd.png'}: it cannot be read any more" in err
    assert sorted(r["file"] for r in _manifest(tmp_path / "export")) == _tree(tmp_path / "export")
    assert len(_manifest(tmp_path / "export")) == 3


def _flagged_job(sessions, tmp_path, job_id="job1", labels=("apple", "banana", "cherry")):
    """A job on real files of which the model flagged three unknown: one of them a person labelled, one a person
    marked none of these."""
    src = tmp_path / "shop"
    files = {  # name: (closest label, confidence, unknown, colour)
        "a.png": ("apple", 0.9, False, "apple"),
        "c.png": ("banana", 0.7, False, "banana"),
        "low.png": ("cherry", 0.2, False, "cherry"),
        "carton.png": ("banana", 0.98, True, "banana"),
        "milk.png": ("apple", 0.3, True, "apple"),
        "tomato.png": ("apple", 0.6, True, "cherry"),
        "odd.png": ("cherry", 0.5, True, "cherry"),
    }
    rows = []
    for i, (name, (label, conf, unknown, colour)) in enumerate(files.items()):
        path = _image(src / name, COLOURS[colour], 100 + i)
        rows.append(row(path, label, conf, sha256_file(path), unknown=unknown, unknown_score=40.0 if unknown else 2.0))
    add_job(sessions, job_id, rows, folder=str(src), labels=list(labels))
    with sessions() as session:
        set_review(session, job_id, str(src / "tomato.png"), "cherry", "ann")  # flagged, but a person knows it
        set_review(session, job_id, str(src / "odd.png"), None, "ann")  # none of these: left out either way
        session.commit()
    return src


def test_export_leaves_unknown_out_or_puts_it_under_unknown(sessions, tmp_path):
    src = _flagged_job(sessions, tmp_path)
    code, text = _export(sessions, "job1", "--out", str(tmp_path / "default"))
    assert code == 0, text
    assert _tree(tmp_path / "default") == ["apple/a.png", "banana/c.png", "cherry/low.png", "cherry/tomato.png"]
    assert "left out 2 images the model flagged unknown (--unknown-dir puts them under unknown/)" in text
    assert {r["file"]: r["unknown"] for r in _manifest(tmp_path / "default")}["cherry/tomato.png"] == "True"

    code, text = _export(sessions, "job1", "--out", str(tmp_path / "all"), "--unknown-dir", "--min-confidence", "0.5")
    assert code == 0, text
    # low.png goes (0.2 < 0.5); the flagged ones all go under unknown/, milk.png's 0.3 notwithstanding.
    assert _tree(tmp_path / "all") == ["apple/a.png", "banana/c.png", "cherry/tomato.png", "unknown/carton.png",
                                       "unknown/milk.png"]
    manifest = {r["file"]: r for r in _manifest(tmp_path / "all")}
    carton = manifest["unknown/carton.png"]
    assert (carton["label"], carton["model_label"], carton["reviewed_label"]) == ("unknown", "banana", "")
    assert (carton["unknown"], float(carton["unknown_score"])) == ("True", 40.0)
    assert carton["source"] == str(src / "carton.png")
    assert (manifest["apple/a.png"]["unknown"], float(manifest["apple/a.png"]["unknown_score"])) == ("False", 2.0)
    assert "unknown/ holds the images the model flagged unknown; move it out before training" in text

    code, text = _export(sessions, "job1", "--out", str(tmp_path / "reviewed"), "--reviewed-only", "--unknown-dir")
    assert code == 0, text
    assert _tree(tmp_path / "reviewed") == ["cherry/tomato.png"]  # a person's label only, flagged or not


def test_unknown_dir_refused_for_a_model_with_an_unknown_class(sessions, tmp_path, capsys):
    _flagged_job(sessions, tmp_path, labels=("apple", "banana", "cherry", "unknown"))
    assert _export(sessions, "job1", "--out", str(tmp_path / "x"), "--unknown-dir")[0] == 2
    assert "the model has a class named 'unknown'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert _export(sessions, "job1", "--out", str(tmp_path / "x"))[0] == 0  # without the flag: left out


def test_file_names_resolve_clashes_ignoring_case():
    from db.datasets import file_names

    rows = [{"label": "apple", "source": "/a/IMG.jpg", "sha256": "1111aaaa9"},
            {"label": "apple", "source": "/b/img.jpg", "sha256": "2222bbbb9"},
            {"label": "apple", "source": "/c/img.jpg", "sha256": "2222bbbb9"},  # same bytes as /b: a counter
            {"label": "banana", "source": "/d/img.jpg", "sha256": "3333"}]  # another class: no clash
    assert file_names(rows) == ["apple/IMG-1111aaaa.jpg", "apple/img-2222bbbb.jpg", "apple/img-2222bbbb-2.jpg",
                                "banana/img.jpg"]


@pytest.mark.slow
def test_an_export_trains_a_tiny_model(tmp_path):
    """Classes of 1, 2 and 2 images: `python -m train --data EXPORT` runs one epoch and saves a bundle."""
    import json

    from db.session import session_factory
    from train.train import main as train

    with scratch_database("sqlite", tmp_path) as url:  # one backend is enough: the training is what is tested
        sessions = session_factory(url)
        _photos_job(sessions, tmp_path)
        export = tmp_path / "export"
        assert _export(sessions, "job1", "--out", str(export))[0] == 0
    run = train(["--data", str(export), "--weights", "none", "--input-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--run-eagerly", "--out", str(tmp_path / "run")])
    card = json.loads((run / "bundle" / "card.json").read_text())
    assert card["classes"] == ["apple", "banana", "cherry"]
    # The 1-image class trains; the others give one image each to the val split.
    assert card["train_counts"] == {"apple": 1, "banana": 1, "cherry": 1}
    assert card["val_counts"] == {"apple": 1, "banana": 0, "cherry": 1}
    assert (run / "bundle" / "model.keras").stat().st_size > 0
