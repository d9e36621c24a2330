"""A 1-epoch training run on a tiny generated dataset writes every output; train.evaluate reads it back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.predict import load_classifier
from tests.helpers.images import COLOUR_CLASSES as CLASSES
from tests.helpers.images import write_colour_dataset

pytestmark = pytest.mark.slow  # every test trains a network or reads the one a module fixture trained


def _val_probs(classifier, val: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """(probabilities, true class index, path) of every val image, computed here through the loaded bundle."""
    paths = [p for c in classifier.labels for p in sorted((val / c).iterdir())]
    y = np.array([classifier.labels.index(p.parent.name) for p in paths])
    return classifier.predict_probs(paths), y, paths


def _right(probs: np.ndarray, y: np.ndarray, tol: float = 1e-4) -> tuple[int, int]:
    """(images whose top-1 is the true class, images too close to call): the run evaluated the model in memory and
    this test the saved one, whose probabilities may differ by rounding; a near-tie may then flip either way."""
    top_two = np.sort(probs, axis=1)[:, -2:]
    return int((probs.argmax(1) == y).sum()), int((top_two[:, 1] - top_two[:, 0] < tol).sum())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from train.train import main

    root = tmp_path_factory.mktemp("train")
    data = write_colour_dataset(root / "data")
    extra = root / "extra"
    for name in ("grey", "white"):
        (extra / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (120 + 30 * i,) * 3).save(extra / name / f"{i}.png")
    out = root / "run"
    main(["--data", str(data), "--extra-data", str(extra), "--weights", "none", "--input-size", "32",
          "--epochs", "1", "--batch-size", "8", "--out", str(out), "--run-eagerly"])
    return out, data


def test_training_writes_every_output(run, classifier_options):
    out, data = run
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
    # The card carries the run's metrics.json, and its top-1 is what the saved bundle scores on the val images.
    metrics = json.loads((out / "metrics.json").read_text())
    assert card["metrics"]["val"] == {k: metrics[k] for k in ("n", "top1", "top5", "macro_f1", "ece")}
    assert card["metrics"]["val_by_source"] == metrics["groups"]
    assert set(metrics["groups"]) == {"src0", "src1"}  # per-source accuracy from file names
    probs, y, paths = _val_probs(load_classifier(out / "bundle", **classifier_options), data / "val")
    right, close = _right(probs, y)
    assert metrics["n"] == len(y) == 9 and abs(round(metrics["top1"] * len(y)) - right) <= close
    for source, group in metrics["groups"].items():
        mask = np.array([p.name.startswith(source + "__") for p in paths])
        right, close = _right(probs[mask], y[mask])
        assert group["n"] == mask.sum() and abs(round(group["top1"] * mask.sum()) - right) <= close, source


def test_extra_classes_are_dropped_from_the_saved_model(run, classifier_options):
    out, _ = run
    clf = load_classifier(out / "bundle", **classifier_options)
    assert clf.labels == sorted(CLASSES) and clf.model.outputs[0].shape[-1] == 3


def test_evaluate_prints_the_summary_line(run, tmp_path, capsys, classifier_options):
    from train.evaluate import main

    out, data = run
    summary = main(["--model", str(out / "bundle"), "--data", str(data / "val"), "--json", str(tmp_path / "m.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"top1=([0-9.]+) top5=([0-9.]+) macro_f1=([0-9.]+) ece=([0-9.]+) n=(\d+)", last)
    assert match and float(match[1]) == pytest.approx(summary["top1"], abs=1e-4)
    assert float(match[2]) == pytest.approx(summary["top5"], abs=1e-4)
    assert float(match[4]) == pytest.approx(summary["ece"], abs=1e-4) and int(match[5]) == summary["n"]
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["n"] == 9 and len(saved["per_class"]) == 3 and 0 <= saved["ece"] <= 1
    # The confusion matrix and top-1 are those of the bundle's own predictions, computed here: evaluate loads the
    # bundle the same way, so they agree exactly (rows: true class, columns: predicted class).
    probs, y, _ = _val_probs(load_classifier(out / "bundle", **classifier_options), data / "val")
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (y, probs.argmax(1)), 1)
    assert saved["confusion_matrix"] == expected.tolist()
    assert saved["top1"] == pytest.approx(np.trace(expected) / 9)
    assert [r["support"] for r in saved["per_class"]] == [3, 3, 3]


def test_evaluate_rejects_unknown_classes(run, tmp_path, classifier_options):
    from train.evaluate import evaluate

    out, _ = run
    (tmp_path / "durian").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "durian" / "a.png")
    with pytest.raises(ValueError, match="durian"):
        evaluate(load_classifier(out / "bundle", **classifier_options), tmp_path)


def test_refuses_to_overwrite_a_run_without_resume(run, capsys):
    from train.train import main

    out, data = run
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(data), "--weights", "none", "--out", str(out)])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err  # cli.fail: one line, exit 2


def test_resume_continues_from_the_last_finished_epoch(tmp_path):
    """--resume picks up the saved epoch and optimizer state: epoch 2 follows epoch 1, not a restart."""
    from train.train import main

    data = write_colour_dataset(tmp_path / "data", n_train=2, n_val=1)
    out = tmp_path / "run"
    common = ["--data", str(data), "--weights", "none", "--input-size", "32", "--batch-size", "8",
              "--out", str(out), "--run-eagerly"]
    main([*common, "--epochs", "1"])
    first = (out / "history.csv").read_text().splitlines()
    main([*common, "--epochs", "2", "--resume"])
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[:2] == first and [line.split(",")[0] for line in lines[1:]] == ["0", "1"]
