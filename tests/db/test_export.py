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
from db.review_queries import set_review
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
    code = main([*args, "--database-url", url_of(sessions)], out=out)
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
    with pytest.raises(SystemExit):
        _export(sessions, "job1", "--out", str(tmp_path / "x"), "--min-confidence", "1.5")
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


def test_file_names_resolve_clashes_ignoring_case():
    from db.export import file_names

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
