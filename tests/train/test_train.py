"""`python -m train` on tiny generated datasets: by default a calibrated head on the frozen backbone (the shipped
distilled one, ImageNet's weights being out of reach), with --fine-tune the network itself; every output is
written, and train.evaluate reads it back."""

from __future__ import annotations

import contextlib
import io
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

RUN_OUTPUTS = ("history.csv", "accuracy.png", "loss.png", "confusion_matrix.png", "report.txt", "metrics.json",
               "bundle/model.keras", "bundle/config.json", "bundle/card.json")


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


def _assert_run_outputs(out: Path, *more: str) -> None:
    for name in (*RUN_OUTPUTS, *more):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("accuracy.png", "loss.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _assert_metrics_are_the_bundles(out: Path, val: Path, classifier_options: dict) -> dict:
    """The card carries the run's metrics.json, and its top-1 is what the saved bundle scores on the val images
    (overall and per source of the file names)."""
    card = json.loads((out / "bundle/card.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert card["metrics"]["val"] == {k: metrics[k] for k in ("n", "top1", "top5", "macro_f1", "ece")}
    assert card["metrics"]["val_by_source"] == metrics["groups"]
    assert set(metrics["groups"]) == {"src0", "src1"}  # per-source accuracy from file names
    probs, y, paths = _val_probs(load_classifier(out / "bundle", **classifier_options), val)
    right, close = _right(probs, y)
    assert metrics["n"] == len(y) == 9 and abs(round(metrics["top1"] * len(y)) - right) <= close
    for source, group in metrics["groups"].items():
        mask = np.array([p.name.startswith(source + "__") for p in paths])
        right, close = _right(probs[mask], y[mask])
        assert group["n"] == mask.sum() and abs(round(group["top1"] * mask.sum()) - right) <= close, source
    return card


"""## The default: a calibrated head on the frozen backbone"""


@pytest.fixture(scope="module")
def backbone_cache(tmp_path_factory):
    """Where model.network extracts the shipped bundle's backbone (XDG_CACHE_HOME): never the user's ~/.cache."""
    return tmp_path_factory.mktemp("xdg-cache")


@contextlib.contextmanager
def offline(cache: Path):
    """ImageNet's weights out of reach, as here (no network), whatever the machine running the tests can reach."""
    from model import network

    real = network.build_feature_extractor

    def build(input_size=224, weights=None):
        if weights == "imagenet":
            raise network.WeightsUnavailableError(network.IMAGENET_HINT.format(why=": no network in the tests"))
        return real(input_size, weights)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setattr(network, "build_feature_extractor", build)
        yield


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, backbone_cache):
    """`python -m train --data DIR` with no --weights (auto) and no --fine-tune, at 32 px and 60 head steps."""
    from train.train import main

    root = tmp_path_factory.mktemp("frozen")
    data = write_colour_dataset(root / "data")
    out, printed, bars = root / "run", io.StringIO(), io.StringIO()
    with offline(backbone_cache), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(bars):
        assert main(["--data", str(data), "--input-size", "32", "--steps", "60", "--folds", "3",
                     "--out", str(out)]) == out
    return out, data, printed.getvalue(), bars.getvalue()


def test_the_default_fits_a_calibrated_head_on_the_distilled_backbone(frozen, classifier_options):
    from model.bundle import BundleConfig
    from train.features import read_features

    out, data, printed, bars = frozen
    _assert_run_outputs(out, "bundle/unknown.npz", "bundle/features.npz", "bundle/reliability.png")
    # auto: no ImageNet weights to be had, said in one line, and the shipped distilled backbone instead
    assert re.search(r"note: --weights auto: no ImageNet weights \(.*\); using the distilled backbone", printed)
    # a progress bar with its ETA (elapsed<remaining) for the features and for the cross-validated head fit
    assert "features: train" in bars and "head (cross-validation)" in bars and re.search(r"\d\d:\d\d<", bars)
    card = _assert_metrics_are_the_bundles(out, data / "val", classifier_options)
    assert card["weights"] == "distilled" and card["input_size"] == 32 and "python -m train)" in card["head"]
    assert card["train_counts"] == {c: 6 for c in sorted(CLASSES)} and card["hyperparameters"]["views"] == 1
    # calibrated on out-of-fold answers of 3 scene folds over every photo, train and val (no --calibrate-on)
    calibration, n_photos = card["calibration"], 3 * (6 + 3)
    assert card["cross_validation"]["sources"] == "all" and card["cross_validation"]["none"]["n"] == n_photos
    assert calibration["fitted_on"] == calibration["unknown"]["threshold_fitted_on"] == n_photos
    assert calibration["folds"] == 3 and calibration["unknown"]["keep_rate"] == 0.7
    assert BundleConfig.read(out / "bundle").temperature == pytest.approx(calibration["temperature"], abs=1e-4)
    # the head fit's curves: loss and accuracy every 10 steps (and after the last), on its rows and on val
    history = (out / "history.csv").read_text().splitlines()
    assert history[0] == "step,loss,accuracy,val_loss,val_accuracy" and len(history) == 1 + 7
    steps, losses = zip(*[(int(r.split(",")[0]), float(r.split(",")[1])) for r in history[1:]], strict=True)
    assert steps == (0, 10, 20, 30, 40, 50, 60) and losses[-1] < losses[0]
    assert len(read_features(out / "bundle")) == n_photos  # features.npz: what python -m train.teach refits from


def test_the_default_bundle_can_be_taught(frozen, tmp_path, backbone_cache):
    from train.teach import teach

    out, _, _, _ = frozen
    photos = tmp_path / "photos" / "yellow"
    photos.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 40), (220, 210, 20 + 10 * i)).save(photos / f"{i}.png")
    report = teach(out / "bundle", tmp_path / "photos", tmp_path / "taught")
    assert report.new_classes == ["yellow"] and report.parent_version == json.loads(
        (out / "bundle/config.json").read_text())["model_version"]


def test_the_default_takes_a_flat_dataset_without_sources(tmp_path, backbone_cache):
    """DIR/<class>/* split by --val-split, file names without a `<source>__` prefix: every photo calibrates."""
    from train.train import main

    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (tmp_path / "flat" / name).mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "flat" / name / f"{name}_{i}.png")
    out = tmp_path / "run"
    with offline(backbone_cache):
        main(["--data", str(tmp_path / "flat"), "--weights", "distilled", "--input-size", "32", "--views", "0",
              "--steps", "30", "--folds", "2", "--val-split", "0.4", "--out", str(out)])
    _assert_run_outputs(out, "bundle/features.npz")
    card = json.loads((out / "bundle/card.json").read_text())
    assert card["train_counts"] == {c: 3 for c in sorted(CLASSES)} and card["val_counts"] == {c: 2 for c in CLASSES}
    assert card["calibration"]["fitted_on"] == 15 and json.loads((out / "metrics.json").read_text())["n"] == 6


def test_fine_tuning_flags_are_refused_or_noted_without_fine_tune(tmp_path, capsys):
    from train.train import main, parse_args, settle

    data = write_colour_dataset(tmp_path / "data", n_train=1, n_val=1)
    with pytest.raises(ValueError, match="--extra-data .* --fine-tune"):
        main(["--data", str(data), "--extra-data", str(data), "--out", str(tmp_path / "run")])
    args = settle(parse_args(["--data", str(data), "--epochs", "3"]))
    assert not args.fine_tune and (args.input_size, args.lr) == (128, 0.05)
    assert "--epochs only apply with --fine-tune" in capsys.readouterr().out
    args = settle(parse_args(["--data", str(data), "--weights", "none"]))  # from scratch: the network itself
    assert args.fine_tune and (args.input_size, args.lr, args.batch_size) == (224, 1e-3, 32)


"""## --fine-tune: the network itself, two phases on pretrained weights (a weights file, as a distilled backbone
is one); from scratch (--weights none): tests/db/test_export.py"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two phases with extra classes: the head on the frozen base for 1 epoch, then --resume to 2 epochs, which
    fine-tunes: the second epoch follows the first, across the phases."""
    from model.network import build_feature_extractor
    from train.train import main

    root = tmp_path_factory.mktemp("train")
    data = write_colour_dataset(root / "data")
    extra = root / "extra"
    for name in ("grey", "white"):
        (extra / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (120 + 30 * i,) * 3).save(extra / name / f"{i}.png")
    weights = root / "backbone.weights.h5"  # a stand-in for a pretrained backbone: what matters is the loading
    build_feature_extractor(32, weights=None).get_layer("densenet121").save_weights(weights)
    out = root / "run"
    common = ["--fine-tune", "--data", str(data), "--extra-data", str(extra), "--weights", str(weights),
              "--input-size", "32", "--batch-size", "8", "--head-epochs", "1", "--fine-tune-from", "conv5_block16",
              "--out", str(out), "--run-eagerly"]
    bars = io.StringIO()
    with contextlib.redirect_stderr(bars):
        main([*common, "--epochs", "1"])
    first = (out / "history.csv").read_text().splitlines()
    main([*common, "--epochs", "2", "--resume"])
    return out, data, first, bars.getvalue(), weights


def test_training_writes_every_output(run, classifier_options):
    out, data, _, bars, weights = run
    _assert_run_outputs(out, "checkpoint.keras")
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:1] == ["epoch"] and "val_accuracy" in history[0] and len(history) == 3
    report = (out / "report.txt").read_text()
    assert all(name in report for name in CLASSES) and "top1=" in report
    card = _assert_metrics_are_the_bundles(out, data / "val", classifier_options)
    assert card["classes"] == sorted(CLASSES) and card["epochs"] == 2 and card["weights"] == weights.name
    assert card["train_counts"] == {c: 6 for c in sorted(CLASSES)} and card["extra_data"] == "extra"
    # calibrated on the val photos, the ECE cross-validated over their scene folds
    assert card["calibration"]["folds_by"] == "scenes" and card["calibration"]["fitted_on"] == 9
    # one progress bar over every step of the run, with its ETA, and a line per epoch
    assert re.search(r"fine-tune: .*\d+/\d+ \[\d\d:\d\d<", bars)
    # conv1 sits below the fine-tuned blocks: after both phases it still holds exactly the loaded kernel.
    import keras

    from model.network import build_feature_extractor

    loaded = build_feature_extractor(32, weights=str(weights)).get_layer("densenet121")
    saved = keras.saving.load_model(out / "bundle/model.keras", compile=False).get_layer("densenet121")
    expected = loaded.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_array_equal(saved.get_layer("conv1_conv").get_weights()[0], expected)


def test_resume_continues_from_the_last_finished_epoch(run):
    """--resume picks up the saved epoch and optimizer state: epoch 2 follows epoch 1, not a restart."""
    out, _, first, _, _ = run
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[:2] == first and [line.split(",")[0] for line in lines[1:]] == ["0", "1"]


def test_extra_classes_are_dropped_from_the_saved_model(run, classifier_options):
    out, _, _, _, _ = run
    clf = load_classifier(out / "bundle", **classifier_options)
    assert clf.labels == sorted(CLASSES) and clf.model.outputs[0].shape[-1] == 3


def test_evaluate_prints_the_summary_line(run, tmp_path, capsys, classifier_options):
    from train.evaluate import main

    out, data, _, _, _ = run
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

    out, _, _, _, _ = run
    (tmp_path / "durian").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "durian" / "a.png")
    with pytest.raises(ValueError, match="durian"):
        evaluate(load_classifier(out / "bundle", **classifier_options), tmp_path)


def test_refuses_to_overwrite_a_run_without_resume(run, capsys):
    from train.train import main

    out, data, _, _, _ = run
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(data), "--weights", "none", "--out", str(out)])  # --weights none: --fine-tune
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err  # cli.fail: one line, exit 2
