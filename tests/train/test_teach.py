"""Teaching a bundle (train.teach): a new class and more photos give a new version with refitted head, temperature
and unknown statistics; what cannot be taught says so in one line (exit 2 through the command line)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, TINY_LABELS
from tests.helpers.images import write_colour_dataset, write_good_images

# The tiny bundle's classes stand for these noisy plain colours in its base set.
BASE_COLOURS = {"apple": "red", "banana": "green", "cherry": "blue"}


@pytest.fixture(scope="module")
def teachable_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a features.npz: 6 photos of a colour per class (each in a scene fold of its own)."""
    from model.bundle import load_keras_model
    from train.data import list_files
    from train.features import BaseFeatures, bundle_embedder, decode_photos, image_features, write_features

    out = tmp_path_factory.mktemp("teachable") / "tiny"
    shutil.copytree(tiny_bundle, out)
    data = write_colour_dataset(tmp_path_factory.mktemp("colours"), n_train=6, n_val=0) / "train"
    split = list_files(data, [BASE_COLOURS[c] for c in TINY_LABELS])
    images, kept, _ = decode_photos(split.paths, 32)
    plain, flip = image_features(bundle_embedder(load_keras_model(out)), images)
    labels = np.asarray(split.labels)[kept]
    folds = np.concatenate([np.arange((labels == c).sum()) % 3 for c in range(len(TINY_LABELS))])
    write_features(out, BaseFeatures(plain, flip, labels, np.full(len(labels), "src0"), folds,
                                     np.ones(len(labels), np.float32), {"ood": plain[:2] * 3}))
    return out


@pytest.fixture(scope="module")
def taught(teachable_bundle, tmp_path_factory):
    """One teach: 4 photos of a new class `kiwi`, 3 more of `cherry` and one unreadable file among them."""
    from train.teach import teach

    data = tmp_path_factory.mktemp("photos")
    write_good_images(data / "kiwi", 4, seed=100)
    write_good_images(data / "cherry", 3, seed=200)
    (data / "cherry" / "broken.jpg").write_bytes(b"not a jpeg at all")
    calls = []
    report = teach(teachable_bundle, data, tmp_path_factory.mktemp("out") / "taught",
                   progress=lambda fraction, message: calls.append((fraction, message)))
    return report, calls


def test_teach_adds_a_class_with_a_new_version_and_refitted_unknown_statistics(teachable_bundle, taught):
    from model.bundle import BundleConfig, read_card
    from model.predict import load_classifier
    from model.unknown import UnknownDetector
    from train.features import read_features

    report, calls = taught
    parent = BundleConfig.read(teachable_bundle)
    config = BundleConfig.read(report.out_dir)
    assert config.labels == [*TINY_LABELS, "kiwi"] and report.new_classes == ["kiwi"]
    assert report.taught == {"cherry": 3, "kiwi": 4}
    assert config.parent_version == report.parent_version == parent.model_version
    assert config.model_version == report.model_version != parent.model_version
    detector = UnknownDetector.load(report.out_dir)
    assert detector.means.shape[0] == 4 and np.isfinite(detector.threshold)  # the new class has its statistics
    base = read_features(report.out_dir)
    assert len(base) == len(read_features(teachable_bundle)) + 7  # the next teach starts from these
    assert (base.sources == "taught").sum() == 7
    assert base.extra["fold_kernels"].shape[1:] == (detector.means.shape[1], 4)  # the next teach's fold priors
    card = read_card(report.out_dir)
    assert card["parent_version"] == parent.model_version and card["taught"]["photos"] == report.taught
    assert {"taught_top1", "base_cv_top1"} <= set(report.before) | set(report.after)
    assert report.after["taught_top1_cv"] is not None and "temperature" in report.after
    clf = load_classifier(report.out_dir, runtime="tf")
    assert clf.labels == config.labels and clf.temperature == pytest.approx(config.temperature)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) > 5


def test_a_taught_bundle_can_be_taught_again(taught, tmp_path):
    """Its features.npz carries the taught photos and its fold heads: the next teach refits from them."""
    from model.bundle import BundleConfig
    from train.teach import teach

    report, _ = taught
    write_good_images(tmp_path / "photos" / "kiwi", 2, seed=300)
    again = teach(report.out_dir, tmp_path / "photos", tmp_path / "again")
    assert again.parent_version == report.model_version and again.new_classes == []
    assert BundleConfig.read(tmp_path / "again").labels == [*TINY_LABELS, "kiwi"]


def test_an_unreadable_photo_is_skipped_and_counted(taught):
    report, _ = taught
    assert report.skipped == 1 and report.taught["cherry"] == 3
    assert any("broken.jpg" in line for line in report.skipped_files)


def test_an_empty_class_folder_is_refused(teachable_bundle, tmp_path):
    from train.teach import TeachError, teach

    write_good_images(tmp_path / "photos" / "kiwi", 2)
    (tmp_path / "photos" / "lime").mkdir()
    with pytest.raises(TeachError, match=r"class folder .*lime has no photos"):
        teach(teachable_bundle, tmp_path / "photos", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bundle_without_features_cannot_be_taught_from_the_command_line(tiny_bundle, tmp_path):
    """As a user types it: one line on stderr, exit code 2, nothing written."""
    write_good_images(tmp_path / "photos" / "kiwi", 2)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "train.teach", "--model", str(tiny_bundle), "--data",
                           str(tmp_path / "photos"), "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot be taught" in lines[0], proc.stderr
    assert "features.npz" in lines[0] and not out.exists()


def test_a_sample_weight_counts_as_that_many_copies_of_the_row():
    """The head fitter's weighted loss: a row of weight 3 is three copies of it (the same fit, to float error)."""
    from train.head import fit_softmax

    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (60, 8)).astype(np.float32), rng.integers(0, 3, 60)
    w = np.where(np.arange(60) < 10, 3.0, 1.0).astype(np.float32)
    copies = np.concatenate([np.arange(60), np.arange(10), np.arange(10)])
    weighted = fit_softmax(x, y, 3, steps=100, sample_weight=w)
    # the standardization differs (copies shift the mean): compare the answers, not the folded weights
    copied = fit_softmax(x[copies], y[copies], 3, steps=100)
    assert (weighted(x).argmax(1) == copied(x).argmax(1)).mean() > 0.95
    plain = fit_softmax(x, y, 3, steps=100)
    heavy = y[:10]
    assert (weighted(x[:10]).argmax(1) == heavy).sum() >= (plain(x[:10]).argmax(1) == heavy).sum()


def test_taught_photos_weigh_a_share_of_their_class():
    from train.features import BaseFeatures
    from train.teach import taught_weights

    labels = np.array([0] * 100 + [1] * 10)
    base = BaseFeatures(np.zeros((110, 2)), np.zeros((110, 2)), labels, np.full(110, "src0"), np.zeros(110, int),
                        np.ones(110, np.float32))
    w = taught_weights(base, np.array([0] * 5 + [1] * 5 + [2] * 4), 3, share=0.5)
    assert np.allclose(w[:5], 10.0)  # half of 100 over 5 photos
    assert np.allclose(w[5:], 1.0)  # half of 10 over 5 photos is less than a base photo: 1
    assert np.allclose(w[10:], 1.0)  # a new class: no base photos
