"""Fixtures shared by every folder: the tiny real DenseNet121 bundle and its classifier, the shipped bundle, image
files, and scratch databases (SQLite and PostgreSQL). Folder-specific fixtures live in each folder's conftest.py;
plain helpers (used at every fixture scope) in tests/helpers/."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT, TINY_LABELS, TINY_SIZE
from tests.helpers.databases import scratch_database
from tests.helpers.images import write_bad_images, write_good_images

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run on TensorFlow unless RUNTIME says otherwise: with "auto" every bundle a test (or a worker process it
# starts) loads would first be converted to ONNX. tests/model/test_runtimes.py covers the ONNX runtime and its
# cache; `RUNTIME=auto make test` runs the whole suite on the default runtime.
os.environ.setdefault("RUNTIME", "tf")

# A test that uses one of these builds or loads a real network, which takes seconds: it is slow whether or not
# its module says so, so that `make test-fast` never pays for one (and a new test cannot slip into it).
NETWORK_FIXTURES = {"tiny_bundle", "tiny_classifier", "honest_bundle", "teachable_bundle"}


def pytest_collection_modifyitems(items):
    for item in items:
        if NETWORK_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def classifier_options() -> dict:
    """`load_classifier`'s options as the entry points take them: from the settings (so RUNTIME above)."""
    from settings import Settings

    return Settings().classifier_options()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A saved bundle of a real, untrained DenseNet121: fast to run, deterministic outputs."""
    import keras

    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    keras.utils.set_random_seed(0)
    model = build_model(len(TINY_LABELS), TINY_SIZE, weights=None)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(model, path, BundleConfig(labels=TINY_LABELS, input_size=TINY_SIZE),
                card={"dataset": "tiny test set", "classes": TINY_LABELS})
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_bundle, classifier_options):
    from model.predict import load_classifier

    return load_classifier(tiny_bundle, **classifier_options)


@pytest.fixture(scope="session")
def honest_bundle(tiny_bundle, tiny_classifier, tmp_path_factory):
    """The tiny bundle with temperature 2.0 and unknown statistics: images from `good_images` are known, those
    from `tests.helpers.images.write_unknown_images` (stripe patterns) are flagged unknown."""
    from tests.helpers.honesty import make_honest_bundle

    return make_honest_bundle(tiny_bundle, tmp_path_factory.mktemp("honest") / "tiny", tmp_path_factory.mktemp("cal"),
                              clf=tiny_classifier if tiny_classifier.runtime == "tf" else None)


@pytest.fixture(scope="session")
def teachable_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a features.npz (6 noisy plain colours per class as its base set): `train.teach` can
    teach it, in seconds."""
    from tests.helpers.teaching import make_teachable_bundle

    return make_teachable_bundle(tiny_bundle, tmp_path_factory.mktemp("teachable") / "tiny",
                                 tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="session")
def shipped_bundle():
    """The committed fruit model's folder: a real bundle for tests that read its files but never load the network."""
    path = ROOT / "model" / "fruits-densenet121"
    assert (path / "config.json").is_file() and (path / "model.keras").is_file(), path
    return path


@pytest.fixture
def good_images(tmp_path):
    """`good_images(n, folder="images", prefix="img", seed=0)`: n small distinct JPEG/PNG files in
    tmp_path/folder (seeds seed..seed+n-1, so the same seed writes the same pixels)."""

    def write(n: int, folder: str = "images", *, prefix: str = "img", seed: int = 0):
        return write_good_images(tmp_path / folder, n, prefix=prefix, seed=seed)

    return write


@pytest.fixture
def bad_images(tmp_path):
    """`bad_images(folder="bad")`: one file per failure kind in tmp_path/folder, keyed by kind."""
    return lambda folder="bad": write_bad_images(tmp_path / folder)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """A migrated, empty database of the test's own: a SQLite file, then a PostgreSQL schema (dropped after)."""
    with scratch_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """Like `database_url`, before any migration: for tests of the migrations themselves."""
    with scratch_database(request.param, tmp_path, migrated=False) as url:
        yield url
