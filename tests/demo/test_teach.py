"""The Teach view and the model picker (webui/teach.py, webui/served.py): photos, a .zip of class folders and a
job's reviews (a real database) taught to the tiny teachable bundle through the running demo's HTTP API; Classify
and Upload serve each new version at once, the picker switches back, and with writes off only the list is there."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import TINY_LABELS
from tests.helpers.databases import LABELS, add_job, row, scratch_database
from tests.helpers.images import write_good_images
from tests.helpers.processes import free_port
from webui.teach_data import class_name, teach_limits, upload_dataset
from webui.upload import UploadLimits, UploadRefused

# -- the upload as a dataset, and a job's reviews as one: no model -------------------------------------------------

LIMITS = UploadLimits(files=20, bytes=2_000_000, pixels=1_000_000, zip_entries=20, zip_bytes=5_000_000, zip_ratio=20)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_an_upload_becomes_class_folders(tmp_path):
    photos = write_good_images(tmp_path / "in", 4, seed=10)
    blob = [p.read_bytes() for p in photos]
    archive = _zip(tmp_path / "set.zip", {"set/Passion Fruit/a.jpg": blob[0], "set/kiwi/b.jpg": blob[1],
                                          "top.jpg": blob[2], "set/.DS_Store": b"x", "inner.zip": b"PK"})
    counts, skipped = upload_dataset([str(archive), str(photos[3])], "Kiwi", LIMITS, tmp_path / "data")
    # A .zip entry's folder names its class; photos at its top level and loose photos take the typed name.
    assert counts == {"passion_fruit": 1, "kiwi": 3}
    assert sorted(p.parent.name for p in (tmp_path / "data").rglob("*.*")) == ["kiwi"] * 3 + ["passion_fruit"]
    assert len(skipped) == 1 and "inner.zip" in skipped[0]
    counts, skipped = upload_dataset([str(archive)], "", LIMITS, tmp_path / "data2")
    assert counts == {"passion_fruit": 1, "kiwi": 1} and any("top.jpg: no class" in s for s in skipped)


def test_uploads_that_cannot_teach_are_refused(tmp_path):
    photo = write_good_images(tmp_path / "in", 1)[0]
    with pytest.raises(UploadRefused, match="No files"):
        upload_dataset([], "kiwi", LIMITS, tmp_path / "a")
    with pytest.raises(UploadRefused, match="Type the class name"):
        upload_dataset([str(photo)], "  ", LIMITS, tmp_path / "b")
    for bad in ("../x", ".hidden", "train", "x" * 65):
        with pytest.raises(UploadRefused, match="class name"):
            upload_dataset([str(photo)], bad, LIMITS, tmp_path / "c")
    bomb = _zip(tmp_path / "bomb.zip", {"kiwi/zeros.png": bytes(3_000_000)})
    with pytest.raises(UploadRefused, match="zip bomb"):
        upload_dataset([str(bomb)], "", LIMITS, tmp_path / "d")
    assert class_name("  Red  grapefruit ") == "red_grapefruit"


def test_teach_limits_scale_the_upload_limits():
    from settings import Settings

    limits = teach_limits(Settings(demo_upload_max_files=50, demo_teach_max_files=500))
    base = UploadLimits.from_settings(Settings())
    assert limits.files == 500 and limits.bytes == 10 * base.bytes and limits.pixels == 10 * base.pixels
    assert (limits.zip_bytes, limits.zip_ratio) == (base.zip_bytes, base.zip_ratio)  # zip bombs: as uploads


def _reviewed_job(sessions, folder: Path) -> list[Path]:
    """A finished job over 4 real files, all labelled apple by the model; 3 reviewed (banana, banana, cherry),
    the 4th reviewed as none of these."""
    from db.content_hash import hash_files
    from db.reviews import set_review

    files = write_good_images(folder, 4, prefix="shot", seed=300)
    add_job(sessions, "job-r", [row(str(f), "apple", 0.6, h) for f, h in zip(files, hash_files(files), strict=True)],
            folder=str(folder), labels=LABELS)
    with sessions() as session, session.begin():
        for f, label in zip(files, ["banana", "banana", "cherry", None], strict=True):
            set_review(session, "job-r", str(f), label, "ann")
    return files


def test_reviews_become_class_folders_through_a_real_database(database_url, tmp_path):
    from db.session import session_factory
    from webui.teach_data import review_dataset

    _reviewed_job(session_factory(database_url), tmp_path / "photos")
    assert review_dataset(database_url, "job-r", tmp_path / "data") == []
    found = sorted(f"{p.parent.name}/{p.name}" for p in (tmp_path / "data").glob("*/shot_*"))
    assert [f.split("/")[0] for f in found] == ["banana", "banana", "cherry"]
    with pytest.raises(LookupError):
        review_dataset(database_url, "no-such-job", tmp_path / "other")


# -- through the running demo ------------------------------------------------------------------------------------

def _serve(model_dir, tmp: Path, *, writes: bool, load: bool, database_url: str | None = None):
    import demo
    from settings import Settings

    settings = Settings(models_dir=str(tmp / "models"), redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        demo_allowed_roots=str(tmp), **({"database_url": database_url} if database_url else {}))
    app = demo.build_demo(model_dir, settings=settings, load=load, writes=writes)
    demo.launch(app, settings, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True)
    return app


@pytest.fixture(scope="module")
def served(teachable_bundle, tmp_path_factory):
    """The demo on the teachable tiny bundle, writes on, with a SQLite results database holding a reviewed job."""
    from gradio_client import Client

    from db.session import session_factory

    tmp = tmp_path_factory.mktemp("teach-demo")
    with scratch_database("sqlite", tmp) as url:
        _reviewed_job(session_factory(url), tmp / "photos")
        app = _serve(teachable_bundle, tmp, writes=True, load=True, database_url=url)
        try:
            yield SimpleNamespace(client=Client(app.local_url, verbose=False, download_files=False),
                                  models=tmp / "models", start=_version(teachable_bundle), tmp=tmp)
        finally:
            app.close()


def _version(bundle: Path) -> str:
    return json.loads((bundle / "config.json").read_text())["model_version"]


def _labels(client, photo: Path) -> set[str]:
    from gradio_client import handle_file

    label, _ = client.predict(handle_file(str(photo)), api_name="/predict")
    return {c["label"] for c in label["confidences"]}


def _table(value) -> list[list]:
    return value["data"] if isinstance(value, dict) else value


@pytest.mark.slow
def test_teach_photos_serves_the_new_version_and_the_picker_switches_back(served, tmp_path):
    from gradio_client import handle_file

    client, start = served.client, served.start
    probe = write_good_images(tmp_path / "probe", 1, seed=900)[0]
    client.predict(start, api_name="/use_model")
    assert _labels(client, probe) == set(TINY_LABELS)
    kiwis = write_good_images(tmp_path / "kiwi", 4, seed=100)
    result, versions, chosen, card = client.predict([handle_file(str(p)) for p in kiwis], "Kiwi",
                                                    api_name="/teach")
    assert "Taught version" in result and "kiwi +4" in result and "| before | after |" in result, result
    bundle = served.models / chosen
    config = json.loads((bundle / "config.json").read_text())
    assert config["model_version"] == chosen and config["parent_version"] == start
    assert config["labels"] == [*TINY_LABELS, "kiwi"] and (bundle / "features.npz").is_file()
    first = _table(versions)[0]
    assert first[:4] == ["yes", chosen, start, "kiwi +4 (new: kiwi)"], versions
    assert chosen in card
    # Classify and Upload serve it from the next request on: four classes, the new one among them.
    assert _labels(client, probe) == {*TINY_LABELS, "kiwi"}
    summary, table, _ = client.predict([handle_file(str(probe))], api_name="/classify_upload")
    assert "1 classified" in summary
    listed = _table(client.predict(api_name="/list_models"))
    assert [r[1] for r in listed][-1] == start and chosen in [r[1] for r in listed]
    # The picker switches back, and forth; a version that is not listed is refused.
    status, versions, chosen_now, card = client.predict(start, api_name="/use_model")
    assert start in status and chosen_now == start and start in card
    assert _labels(client, probe) == set(TINY_LABELS)
    status, *_ = client.predict("not-a-version", api_name="/use_model")
    assert "Not switched" in status and _labels(client, probe) == set(TINY_LABELS)
    client.predict(chosen, api_name="/use_model")
    assert _labels(client, probe) == {*TINY_LABELS, "kiwi"}


@pytest.mark.slow
def test_teach_a_zip_of_class_folders_and_refusals(served, tmp_path):
    from gradio_client import handle_file

    client = served.client
    client.predict(served.start, api_name="/use_model")
    photos = [p.read_bytes() for p in write_good_images(tmp_path / "in", 3, seed=400)]
    archive = _zip(tmp_path / "set.zip", {"set/plum/a.jpg": photos[0], "set/cherry/b.jpg": photos[1],
                                          "set/plum/broken.jpg": b"not a photo", "loose.jpg": photos[2]})
    result, versions, chosen, _ = client.predict([handle_file(str(archive))], "", api_name="/teach")
    assert "Taught version" in result and "cherry +1, plum +1" in result, result
    assert "loose.jpg: no class" in result and "broken.jpg" in result  # each left-out file says why
    assert json.loads((served.models / chosen / "config.json").read_text())["parent_version"] == served.start
    bomb = _zip(tmp_path / "bomb.zip", {"plum/zeros.png": bytes(3_000_000)})
    for files, typed, why in [([], "kiwi", "No files"), ([str(archive)], "../etc", "cannot be a class name"),
                              ([str(bomb)], "", "zip bomb")]:
        result, _, still, _ = client.predict([handle_file(f) for f in files], typed, api_name="/teach")
        assert result.startswith("**Not taught:**") and why in result and still == chosen, result


@pytest.mark.slow
def test_teach_from_reviews_through_the_database(served):
    client = served.client
    client.predict(served.start, api_name="/use_model")
    result, versions, chosen, _ = client.predict("job-r", api_name="/teach_from_reviews")
    assert "Taught version" in result and "banana +2, cherry +1" in result, result
    assert _table(versions)[0][:4] == ["yes", chosen, served.start, "banana +2, cherry +1"]
    for job, why in [("no-such-job", "no-such-job"), ("", "Enter the id")]:
        result, *_ = client.predict(job, api_name="/teach_from_reviews")
        assert result.startswith("**Not taught:**") and why in result, result


@pytest.mark.slow
def test_a_bundle_without_features_cannot_be_taught(tiny_bundle, tmp_path):
    from gradio_client import Client, handle_file

    app = _serve(tiny_bundle, tmp_path, writes=True, load=False)
    try:
        client = Client(app.local_url, verbose=False, download_files=False)
        photo = write_good_images(tmp_path / "in", 1)[0]
        result, versions, chosen, _ = client.predict([handle_file(str(photo))], "kiwi", api_name="/teach")
        assert "**Not taught:**" in result and "features.npz" in result, result
        assert chosen == _version(tiny_bundle) and not [p for p in (tmp_path / "models").iterdir()]
    finally:
        app.close()


@pytest.mark.slow
def test_with_writes_off_only_the_list_of_versions_is_served(tiny_bundle, tmp_path):
    from gradio_client import Client

    app = _serve(tiny_bundle, tmp_path, writes=False, load=False)
    try:
        client = Client(app.local_url, verbose=False, download_files=False)
        endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert "/list_models" in endpoints
        assert not endpoints & {"/teach", "/teach_from_reviews", "/use_model"}, endpoints
        listed = _table(client.predict(api_name="/list_models"))
        assert [r[:2] for r in listed] == [["yes", _version(tiny_bundle)]]
    finally:
        app.close()
