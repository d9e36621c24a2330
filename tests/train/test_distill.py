"""Distillation: a tiny teacher made here, a tiny DenseNet121 student, one epoch on generated images.

Tests that build, convert, run or train a network are slow; the refusals, views and the probe maths are quick."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.images import COLOUR_CLASSES as CLASSES
from tests.helpers.images import write_colour_dataset
from tests.train.conftest import SIZE


@pytest.mark.slow
def test_converted_teacher_equals_original(teacher_files):
    from train.teachers import load_teacher

    original, converted = (load_teacher(p) for p in teacher_files)
    x = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    a, b = original.features(x), converted.features(x)
    assert a.shape == b.shape == (6, 12) and a.std() > 0
    np.testing.assert_allclose(b, a, atol=1e-4)  # float32 conversion: rounding-level differences only
    np.testing.assert_array_equal(converted.features(x[2:3])[0], b[2])  # batched == one at a time
    assert len(converted.sha256) == 64 and converted.card()["feature_dim"] == 12
    with pytest.raises(ValueError, match="uint8 images of 32x32x3"):
        converted.features(x.astype(np.float32))


def test_unknown_teacher_format_is_refused(tmp_path):
    from train.teachers import load_teacher

    (tmp_path / "t.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported teacher t\.pt"):
        load_teacher(tmp_path / "t.pt")
    with pytest.raises(FileNotFoundError):
        load_teacher(tmp_path / "missing.tflite")


def test_views_are_the_same_crop_at_both_sizes():
    from train.views import ViewPolicy, render, sample_specs

    source = np.zeros((64, 64, 3), np.uint8)
    source[:, 32:] = 255  # left half black, right half white
    specs = sample_specs(3, 4, ViewPolicy(jitter=0.0), np.random.default_rng(0))
    assert specs.shape == (12, 8)
    np.testing.assert_array_equal(specs[[0, 4, 8], :4], [[0, 0, 1, 1]] * 3)  # view 0 = the whole image
    for spec in specs:
        big, small = render(source, spec, 48), render(source, spec, 12)
        # The white fraction of the view is the same whatever the size it is rendered at.
        assert abs(big.mean() - small.mean()) < 255 * 0.1


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, teacher_files):
    from train.distill import main

    root = tmp_path_factory.mktemp("distill")
    data = write_colour_dataset(root / "data")
    common = ["--teacher", str(teacher_files[1]), "--teacher", str(teacher_files[0]), "--data", str(data / "train"),
              "--input-size", str(SIZE), "--views", "2", "--batch-size", "6", "--out", str(root / "run"),
              "--run-eagerly"]
    main(common + ["--epochs", "1"])
    cache_mtime = (root / "run" / "views.npz").stat().st_mtime_ns
    first_history = (root / "run" / "history.csv").read_text()
    main(common + ["--epochs", "2", "--resume"])
    return root / "run", data, cache_mtime, first_history


@pytest.mark.slow
def test_distill_writes_every_output(distilled, teacher_files):
    run, _, _, _ = distilled
    for name in ("densenet121_distilled.weights.h5", "history.csv", "loss.png", "card.json", "views.npz"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((run / "card.json").read_text())
    from model.bundle import file_sha256

    assert [t["file"] for t in card["teachers"]] == ["tiny.tflite", "tiny.keras"]
    assert card["teachers"][0]["sha256"] == file_sha256(teacher_files[1])
    assert card["images"] == 6 * len(CLASSES) and card["views"] == 12 * len(CLASSES)
    assert card["cost"]["teacher_views_per_s"] > 0 and card["cost"]["student_train_img_per_s"] > 0
    views = np.load(run / "views.npz")
    assert views["student"].shape == (36, SIZE, SIZE, 3) and views["targets"].shape == (36, 24)


@pytest.mark.slow
def test_resume_continues_without_running_the_teachers_again(distilled):
    run, _, cache_mtime, first_history = distilled
    rows = (run / "history.csv").read_text().splitlines()
    assert len(first_history.splitlines()) == 2 and len(rows) == 3  # header + epoch 1, then + epoch 2
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    assert (run / "views.npz").stat().st_mtime_ns == cache_mtime
    assert json.loads((run / "card.json").read_text())["epochs_done"] == 2


@pytest.mark.slow
def test_distilled_weights_are_a_start_for_python_m_train(distilled):
    """The run's weights file loads as the backbone `python -m train --weights FILE` builds on (both its paths:
    tests/train/test_train.py trains on such a file)."""
    from model.network import build_feature_extractor

    run, _, _, _ = distilled
    weights = run / "densenet121_distilled.weights.h5"
    loaded = build_feature_extractor(SIZE, weights=str(weights)).get_layer("densenet121")
    fresh = build_feature_extractor(SIZE, weights=None).get_layer("densenet121")
    kernel = loaded.get_layer("conv1_conv").get_weights()[0]
    assert not np.allclose(fresh.get_layer("conv1_conv").get_weights()[0], kernel)
    # the file holds the whole backbone: every layer with weights differs from a fresh network's
    assert all(not np.allclose(a, b) for a, b in zip(loaded.get_weights(), fresh.get_weights(), strict=True)
               if a.size > 1 and a.std() > 0)


@pytest.mark.slow
def test_init_continues_from_a_distilled_backbone(distilled, teacher_files, tmp_path):
    from model.bundle import file_sha256
    from model.network import WeightsUnavailableError, build_feature_extractor
    from train.distill import main
    from train.student import build_student

    run, data, _, _ = distilled
    weights = run / "densenet121_distilled.weights.h5"
    # The student starts from the file's kernels, not from a fresh initialisation.
    student = build_student(SIZE, [12, 12], str(weights)).get_layer("densenet121")
    distilled_conv1 = build_feature_extractor(SIZE, weights=str(weights)).get_layer("densenet121")
    np.testing.assert_array_equal(student.get_layer("conv1_conv").get_weights()[0],
                                  distilled_conv1.get_layer("conv1_conv").get_weights()[0])
    out = tmp_path / "continued"
    main(["--teacher", str(teacher_files[1]), "--teacher", str(teacher_files[0]), "--data", str(data / "train"),
          "--input-size", str(SIZE), "--views", "2", "--batch-size", "6", "--epochs", "1", "--seed", "2",
          "--init", str(weights), "--out", str(out), "--run-eagerly"])
    card = json.loads((out / "card.json").read_text())
    assert card["init"] == {"file": weights.name, "sha256": file_sha256(weights)}
    assert card["architecture"].endswith(f"distilled from {weights.name}") and card["epochs_done"] == 1
    assert not np.array_equal(np.load(out / "views.npz")["specs"], np.load(run / "views.npz")["specs"])  # fresh views
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        main(["--teacher", str(teacher_files[0]), "--data", str(data / "train"), "--init", str(tmp_path / "no.h5"),
              "--out", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()  # refused before any folder or teacher work


@pytest.mark.slow
def test_a_val_split_is_refused_as_distillation_data(tmp_path, teacher_files):
    from train.distill import main

    data = write_colour_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="val/test split"):
        main(["--teacher", str(teacher_files[0]), "--data", str(data / "val"), "--out", str(tmp_path / "r")])


def test_softmax_probe_separates_separable_features():
    from train.probe import fit_softmax

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    y = rng.integers(0, 4, 400)
    x = centres[y] + rng.normal(0, 1, (400, 16))
    predict = fit_softmax(x[:300], y[:300], 4, l2=1e-3, steps=300, lr=0.05)
    assert (predict(x[300:]).argmax(1) == y[300:]).mean() > 0.95
    shuffled = fit_softmax(x[:300], rng.permutation(y[:300]), 4, l2=1e-3, steps=300, lr=0.05)
    assert (shuffled(x[300:]).argmax(1) == y[300:]).mean() < 0.6  # nothing to learn from shuffled labels


@pytest.mark.slow
def test_probe_cli_prints_scores_per_source(distilled, capsys):
    from train.probe import main

    run, data, _, _ = distilled
    # make_dataset names val files src0__* / src1__*: two source groups besides the overall score
    scores = main(["--weights", str(run / "densenet121_distilled.weights.h5"), "--input-size", str(SIZE),
                   "--data", str(data), "--steps", "100"])
    out = capsys.readouterr().out
    assert set(scores) == {"probe_top1", "probe_top1[src0]", "probe_top1[src1]"}
    assert f"probe_top1={scores['probe_top1']:.4f}" in out
    # 9 val images: the overall score is the mean of the groups weighted by their sizes (6 and 3)
    assert scores["probe_top1"] == pytest.approx((6 * scores["probe_top1[src0]"] + 3 * scores["probe_top1[src1]"]) / 9)


@pytest.mark.slow
def test_probe_of_a_teacher(teacher_files, tmp_path, capsys):
    from train.probe import main

    data = write_colour_dataset(tmp_path / "data")
    for split in ("train", "val"):  # an unreadable file is skipped, not fatal
        (data / split / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    scores = main(["--teacher", str(teacher_files[1]), "--data", str(data), "--steps", "200"])
    # The classes are three distinct colours: mean-pooled conv features of them are linearly separable.
    assert scores["probe_top1"] == 1.0
    # Fitted on 2 augmented views of each readable training image as well: 6 per class, so 36 more rows.
    scores = main(["--teacher", str(teacher_files[1]), "--data", str(data), "--steps", "200", "--views", "2"])
    assert f"(+{2 * 6 * len(CLASSES)} views)" in capsys.readouterr().out and scores["probe_top1"] == 1.0


@pytest.mark.slow
def test_the_ship_recipe_cross_validates_calibrates_and_evaluates(distilled, teacher_files, tmp_path, capsys):
    """The shipped model's recipe (train.frozen) end to end on a tiny backbone: the head cross-validated over one
    source's photos in scene folds found by a teacher, temperature and unknown threshold on those out-of-fold
    answers, the bundle classifying as its head does, with features.npz to teach it from; then
    `train.evaluate --ood`."""
    from model.bundle import BundleConfig, read_card
    from model.predict import load_classifier
    from tests.helpers.images import write_unknown_images
    from train.evaluate import evaluate as evaluate_bundle
    from train.evaluate import main as evaluate
    from train.features import read_features
    from train.frozen import main

    run, data, _, _ = distilled
    out = tmp_path / "bundle"
    ood = write_unknown_images(tmp_path / "ood", 6)
    weights = run / "densenet121_distilled.weights.h5"
    main(["--weights", str(weights), "--input-size", str(SIZE), "--data", str(data), "--steps", "100",
          "--views", "1", "--folds", "3", "--calibrate-on", "src0", "--out", str(out), "--scenes",
          str(teacher_files[1]), "--ood", str(tmp_path / "ood"), "--cache", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert "cv_top1=" in printed and "calibration: temperature=" in printed
    card, config = read_card(out), BundleConfig.read(out)
    cv = card["cross_validation"]
    assert cv["sources"] == ["src0"] and cv["none"]["folds"] == 3 and config.parent_version == ""
    # every src0 photo of train and val, each predicted by a head (and statistics) fitted without it
    n_pool = len(list(data.glob("*/*/src0__*.jpg")))
    assert cv["none"]["n"] == n_pool and cv["folds"].startswith("scenes") and "tiny.tflite" in cv["folds"]
    # the temperature and the threshold on every out-of-fold answer (held-out scenes: a new visit)
    calibration = card["calibration"]
    assert calibration["fitted_on"] == calibration["unknown"]["threshold_fitted_on"] == n_pool
    assert calibration["folds"] == 3 and calibration["unknown"]["ood"]["n"] == len(ood)
    assert config.temperature == pytest.approx(calibration["temperature"], abs=1e-4)
    assert (out / "reliability.png").is_file() and card["model_version"] == config.model_version
    # the bundle, through the shared prediction API, scores what its card says
    summary = evaluate_bundle(load_classifier(out, runtime="tf"), data / "val", tmp_path)
    assert summary["top1"] == pytest.approx(card["metrics"]["val"]["top1"])
    assert card["weights"] == weights.name and (out / "report.txt").is_file()
    base = read_features(out)  # what train.teach refits from: train and val photos, and the not-fruit reference
    assert len(base) == len(list(data.glob("*/*/*.jpg"))) and base.extra["ood"].shape[0] == len(ood)
    assert set(base.folds[base.sources == "src0"]) <= {0, 1, 2} and set(base.folds[base.sources == "src1"]) == {-1}
    clf = load_classifier(out, runtime="tf")
    assert clf.unknown.threshold == pytest.approx(calibration["unknown"]["threshold"], abs=1e-4)
    main(["--weights", str(weights), "--input-size", str(SIZE), "--data", str(data), "--steps", "100",
          "--views", "1", "--folds", "3", "--calibrate-on", "src0", "--out", str(tmp_path / "again"), "--scenes",
          str(teacher_files[1]), "--cache", str(tmp_path / "cache")])  # every feature set from the cache
    assert BundleConfig.read(tmp_path / "again").temperature == pytest.approx(config.temperature)
    summary = evaluate(["--model", str(out), "--data", str(data / "val"), "--ood", str(tmp_path / "ood")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("top1=") and " ece=" in lines[-2] and lines[-1].startswith("ood_auroc=")
    assert summary["ood"]["n_ood"] == len(ood) and 0.0 <= summary["ood"]["auroc"] <= 1.0


def test_distillation_data_skips_hidden_files_and_notes_val_folders(tmp_path, capsys):
    from train.targets import list_images

    data = write_colour_dataset(tmp_path / "extra")  # a dataset root: its val images count as unlabelled data
    a_red = next((data / "train" / "red").iterdir())
    (data / "train" / "red" / ".thumb.jpg").write_bytes(a_red.read_bytes())
    (data / ".cache").mkdir()
    (data / ".cache" / "copy.jpg").write_bytes(b"")
    paths = list_images([str(data)])
    assert len(paths) == 9 * len(CLASSES) and not any(p.name.startswith(".") or ".cache" in p.parts for p in paths)
    assert f"note: {3 * len(CLASSES)} images under" in capsys.readouterr().out
