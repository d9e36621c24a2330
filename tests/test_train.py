"""A 1-epoch training run on a tiny generated dataset writes every output; train.evaluate reads it back."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from model.predict import load_classifier
from tests.conftest import classifier_options

CLASSES = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_dataset(root, n_train=6, n_val=3):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, colour in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"src{i % 2}__{name}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from train.train import main

    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "data")
    extra = root / "extra"
    for name in ("grey", "white"):
        (extra / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (120 + 30 * i,) * 3).save(extra / name / f"{i}.png")
    out = root / "run"
    main(["--data", str(data), "--extra-data", str(extra), "--weights", "none", "--input-size", "32",
          "--epochs", "1", "--batch-size", "8", "--out", str(out), "--run-eagerly"])
    return out, data


def test_training_writes_every_output(run):
    out, _ = run
    for name in ("history.csv", "accuracy.png", "loss.png", "confusion_matrix.png", "report.txt", "metrics.json",
                 "checkpoint.keras", "bundle/model.keras", "bundle/config.json", "bundle/card.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("accuracy.png", "loss.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:1] == ["epoch"] and "val_accuracy" in history[0] and len(history) == 2
    report = (out / "report.txt").read_text()
    assert all(name in report for name in CLASSES) and "top1=" in report
    card = json.loads((out / "bundle/card.json").read_text())
    assert card["classes"] == sorted(CLASSES) and card["epochs"] == 1 and card["weights"] == "none"
    assert card["train_counts"] == {c: 6 for c in sorted(CLASSES)} and card["extra_data"] == "extra"
    assert 0.0 <= card["metrics"]["val"]["top1"] <= 1.0
    assert set(card["metrics"]["val_by_source"]) == {"src0", "src1"}  # per-source accuracy from file names


def test_extra_classes_are_dropped_from_the_saved_model(run):
    out, _ = run
    clf = load_classifier(out / "bundle", **classifier_options())
    assert clf.labels == sorted(CLASSES) and clf.model.outputs[0].shape[-1] == 3


def test_evaluate_prints_the_summary_line(run, tmp_path, capsys):
    from train.evaluate import main

    out, data = run
    summary = main(["--model", str(out / "bundle"), "--data", str(data / "val"), "--json", str(tmp_path / "m.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"top1=([0-9.]+) top5=([0-9.]+)", last)
    assert match and float(match[1]) == pytest.approx(summary["top1"], abs=1e-4)
    assert float(match[2]) == 1.0  # 3 classes: the true one is always in the top 5
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["n"] == 9 and len(saved["per_class"]) == 3 and 0 <= saved["ece"] <= 1
    assert np.array(saved["confusion_matrix"]).sum() == 9


def test_evaluate_rejects_unknown_classes(run, tmp_path):
    from train.evaluate import evaluate

    out, _ = run
    (tmp_path / "durian").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "durian" / "a.png")
    with pytest.raises(ValueError, match="durian"):
        evaluate(load_classifier(out / "bundle", **classifier_options()), tmp_path)


def test_refuses_to_overwrite_a_run_without_resume(run):
    from train.train import main

    out, data = run
    with pytest.raises(SystemExit, match="--resume"):
        main(["--data", str(data), "--weights", "none", "--out", str(out)])


def test_resume_continues_from_the_last_finished_epoch(tmp_path):
    """--resume picks up the saved epoch and optimizer state: epoch 2 follows epoch 1, not a restart."""
    from train.train import main

    data = make_dataset(tmp_path / "data", n_train=2, n_val=1)
    out = tmp_path / "run"
    common = ["--data", str(data), "--weights", "none", "--input-size", "32", "--batch-size", "8",
              "--out", str(out), "--run-eagerly"]
    main([*common, "--epochs", "1"])
    first = (out / "history.csv").read_text().splitlines()
    main([*common, "--epochs", "2", "--resume"])
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[:2] == first and [line.split(",")[0] for line in lines[1:]] == ["0", "1"]
