"""Task distillation (`python -m train.match`): a tiny teacher, a tiny DenseNet121 classifier started from a bundle of
another input size, one epoch then one more with --resume, on generated images (labelled and unlabelled)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.images import COLOUR_CLASSES, write_colour_dataset
from tests.train.conftest import SIZE

CLASSES = sorted(COLOUR_CLASSES)  # the dataset's class order: its folder names, sorted
STUDENT_SIZE = 40  # not the init bundle's size: the student takes its weights at a new input size


def write_init_bundle(folder, n_classes: int = len(CLASSES)):
    import keras

    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    keras.utils.set_random_seed(3)
    model = build_model(n_classes, SIZE, weights=None)
    return save_bundle(model, folder, BundleConfig(labels=CLASSES[:n_classes], input_size=SIZE), {})


@pytest.fixture(scope="module")
def matched(tmp_path_factory, teacher_files):
    from train.match import main

    root = tmp_path_factory.mktemp("match")
    labelled = write_colour_dataset(root / "labelled")
    unlabelled = write_colour_dataset(root / "unlabelled", n_train=2)  # not under --labels: no labels used
    init = write_init_bundle(root / "init")
    common = ["--teacher", str(teacher_files[1]), "--labels", str(labelled), "--data", str(labelled / "train"),
              "--data", str(unlabelled / "train"), "--init", str(root / "init"), "--input-size", str(STUDENT_SIZE),
              "--views", "2", "--batch-size", "6", "--out", str(root / "run"), "--run-eagerly"]
    main(common + ["--epochs", "1"])
    cache_mtime = (root / "run" / "views.npz").stat().st_mtime_ns
    main(common + ["--epochs", "2", "--resume"])
    return root / "run", labelled, init, cache_mtime


@pytest.mark.slow
def test_match_writes_a_bundle_with_its_evaluation_and_card(matched, teacher_files):
    from model.bundle import BundleConfig, file_sha256

    run, _, init, _ = matched
    for name in ("model.keras", "config.json", "card.json", "metrics.json", "report.txt", "confusion_matrix.png"):
        assert (run / "bundle" / name).stat().st_size > 0, name
    config = BundleConfig.read(run / "bundle")
    assert config.labels == CLASSES and config.input_size == STUDENT_SIZE
    assert config.model_version != init.model_version  # the student trained
    card = json.loads((run / "card.json").read_text())
    assert card["teachers"][0]["sha256"] == file_sha256(teacher_files[1])
    # 6 labelled + 2 unlabelled images per class, 2 views each: only the labelled ones fit the teacher classifier
    assert card["views"] == 16 * len(CLASSES) and card["labelled_views"] == 12 * len(CLASSES)
    # Plain colours are separable in the tiny teacher's features: its classifier gets the val images right.
    assert card["teacher_classifier_val"]["top1"] == 1.0
    assert set(card["teacher_classifier_val"]) == {"top1", "top1[src0]", "top1[src1]"}
    assert card["cost"]["teacher_views_per_s"] > 0 and card["cost"]["student_train_img_per_s"] > 0
    bundle_card = json.loads((run / "bundle" / "card.json").read_text())
    assert bundle_card["metrics"]["val"]["n"] == 3 * len(CLASSES)
    assert bundle_card["weights"].startswith(f"bundle {init.model_version}")


@pytest.mark.slow
def test_match_logs_val_top1_per_source_and_resumes_without_the_teachers(matched):
    run, _, _, cache_mtime = matched
    rows = (run / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss", "val_top1", "val_top1[src0]", "val_top1[src1]"} <= set(header)
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]  # epoch 1, then epoch 2 after --resume
    top1 = [float(r.split(",")[header.index("val_top1")]) for r in rows[1:]]
    assert all(0.0 <= t <= 1.0 for t in top1)
    assert (run / "views.npz").stat().st_mtime_ns == cache_mtime
    for plot in ("loss.png", "accuracy.png"):
        assert (run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_matched_bundle_serves_at_its_new_size(matched):
    from model.predict import load_classifier

    run, labelled, _, _ = matched
    classifier = load_classifier(run / "bundle", runtime="tf")
    assert classifier.input_size == STUDENT_SIZE
    paths = sorted((labelled / "val" / "red").iterdir())
    assert all(r.ok and r.label in CLASSES for r in classifier.predict(paths))
    probs = classifier.predict_probs(paths)
    assert probs.shape == (3, len(CLASSES)) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_view_labels_and_teacher_probabilities(tmp_path):
    from train.match import teacher_probs, view_labels

    labelled = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    views = {"paths": np.array([str(tmp_path / "b.jpg"), str(tmp_path / "other.jpg"), str(tmp_path / "a.jpg")]),
             "image_index": np.repeat(np.arange(3), 2)}
    np.testing.assert_array_equal(view_labels(views, labelled, [4, 7]), [7, 7, -1, -1, 4, 4])
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p1, p4 = teacher_probs(logits, 1.0), teacher_probs(logits, 4.0)
    np.testing.assert_allclose(p1.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(p1[1], 1 / 3, rtol=1e-6)
    assert p4[0, 0] < p1[0, 0] and p4[0].argmax() == 0  # a higher temperature softens, keeps the order


@pytest.mark.slow
def test_an_init_bundle_with_other_classes_is_refused(tmp_path):
    from train.match import build_student

    write_init_bundle(tmp_path / "init", n_classes=2)
    with pytest.raises(ValueError, match="has 2 classes, the labelled data 3"):
        build_student(str(tmp_path / "init"), 3, STUDENT_SIZE)
