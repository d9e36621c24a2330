"""The Upload tab: a visitor's photos (or a .zip) classified in the demo process, one row per file, each limit
refused with its reason; and the Batch tab's one line instead of the folder form when no broker answers.

The limits are checked without a model (fast); the rows, the CSV and the refusals through the HTTP API on the
tiny bundle (slow: a server on a real network)."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

from tests.demo.conftest import UPLOAD_LIMITS
from tests.helpers import TINY_LABELS, redis_db
from tests.helpers.images import write_bad_images, write_good_images
from tests.helpers.processes import free_port
from webui.upload import UploadLimits, UploadRefused, expand_upload


def _limits(**changed) -> UploadLimits:
    base = dict(files=4, bytes=300_000, pixels=20_000, zip_entries=6, zip_bytes=5_000_000, zip_ratio=20.0)
    return UploadLimits(**{**base, **changed})


def _zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            if name.endswith("/"):
                zf.mkdir(name.rstrip("/"))
            else:
                zf.writestr(name, data)
    return path


def _bomb(path: Path, mb: int = 3) -> Path:
    """One entry of zeros: `mb` MB that deflate to a few KB."""
    return _zip(path, {"zeros.png": bytes(mb * 1_000_000)})


# -- the limits, without a model -----------------------------------------------------------------------------

def test_settings_give_the_limits():
    from settings import Settings

    limits = UploadLimits.from_settings(Settings(**UPLOAD_LIMITS))
    assert limits == _limits()


def test_files_and_zip_entries_become_one_item_each(tmp_path):
    photos = write_good_images(tmp_path / "in", 3)
    archive = _zip(tmp_path / "more.zip", {
        "a/one.jpg": photos[0].read_bytes(), "a/": b"", ".DS_Store": b"x", "__MACOSX/a/._one.jpg": b"x",
        "inner.zip": b"PK", "notes.txt": b"not a photo",
    })
    items = expand_upload([str(photos[1]), str(archive), str(photos[2])], _limits(files=5, pixels=10**9))
    assert [i.name for i in items] == [photos[1].name, "more.zip/a/one.jpg", "more.zip/inner.zip",
                                       "more.zip/notes.txt", photos[2].name]
    assert items[1].source == photos[0].read_bytes()  # read in memory, never extracted to disk
    assert "inside the .zip" in items[2].error and items[3].error is None  # the classifier says what .txt is
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is no zip")
    (item,) = expand_upload([str(broken)], _limits())
    assert item.source is None and "not a readable .zip" in item.error


@pytest.mark.parametrize("case, message", [
    ("no files", "No files"),
    ("too many files", "5 files: this demo classifies at most 4"),
    ("too many bytes", "per upload (DEMO_UPLOAD_MAX_BYTES)"),
    ("too many pixels", "megapixels per upload (DEMO_UPLOAD_MAX_PIXELS)"),
    ("too many files in the zip", "5 files once the .zip is opened"),
    ("too many zip entries", "has 7 entries; this demo opens a .zip of at most 6"),
    ("zip expands too far", "expands to 3.0 MB; this demo opens a .zip of at most 2.0 MB"),
    ("zip bomb", "times its own size (a zip bomb?)"),
])
def test_each_limit_refuses_the_whole_upload_with_its_reason(tmp_path, case, message):
    photos = write_good_images(tmp_path / "in", 5)  # 48 x 40 each
    one = photos[0].read_bytes()
    paths, limits = {
        "no files": ([], _limits()),
        "too many files": (photos, _limits()),
        "too many bytes": (photos[:2], _limits(bytes=sum(p.stat().st_size for p in photos[:2]) - 1)),
        "too many pixels": (photos[:3], _limits(pixels=3 * 48 * 40 - 1)),
        "too many files in the zip": ([_zip(tmp_path / "five.zip", {f"{i}.jpg": one for i in range(5)})], _limits()),
        "too many zip entries": ([_zip(tmp_path / "dirs.zip", {f"d{i}/": b"" for i in range(7)})], _limits()),
        "zip expands too far": ([_bomb(tmp_path / "big.zip")], _limits(zip_bytes=2_000_000, zip_ratio=10**6)),
        "zip bomb": ([_bomb(tmp_path / "bomb.zip")], _limits()),
    }[case]
    with pytest.raises(UploadRefused, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        expand_upload([str(p) for p in paths], limits)


def test_a_zip_entry_that_lies_about_its_size_is_an_error_row(tmp_path):
    """The limits trust the sizes in the .zip's directory; an entry that holds more than it declares must not
    expand past them. zipfile reads no more than the declared size and then fails the CRC check."""
    good = write_good_images(tmp_path / "in", 1)[0].read_bytes()
    archive = _zip(tmp_path / "liar.zip", {"liar.jpg": good}, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")  # declared uncompressed size: 10 bytes
    archive.write_bytes(bytes(data))
    (item,) = expand_upload([str(archive)], _limits(pixels=10**9))
    assert item.source is None and "cannot read this entry of the .zip (Bad CRC-32" in item.error


# -- the Batch tab without a broker ---------------------------------------------------------------------------

def test_the_folder_form_gives_way_to_one_line_without_a_broker(tmp_path):
    import os

    from settings import Settings
    from webui.batch import BatchTab

    gone = BatchTab(tmp_path, Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    form, line = gone.availability()
    assert form.visible is False and line.visible is True
    assert "no task broker" in line.value and "**Upload** tab" in line.value
    here = BatchTab(tmp_path, Settings(redis_url=os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db(13)}")))
    form, line = here.availability()  # the test Redis answers: the form, no line
    assert form.visible is True and line.visible is False


# -- through the HTTP API, on the tiny network ----------------------------------------------------------------

def _upload(server, paths):
    from gradio_client import Client, handle_file

    client = Client(server.local_url, verbose=False, download_files=False)
    return client.predict([handle_file(str(p)) for p in paths], api_name="/classify_upload")


def _csv_rows(server, csv_file) -> list[dict]:
    import httpx

    url = csv_file["url"] if isinstance(csv_file, dict) else f"{server.local_url}gradio_api/file={csv_file}"
    return list(csv.DictReader(io.StringIO(httpx.get(url, timeout=60).text)))


def test_photos_and_a_zip_give_one_row_each(demo_server, tiny_classifier, tmp_path):
    photos = write_good_images(tmp_path / "in", 4, seed=20)
    bad = write_bad_images(tmp_path / "bad")
    archive = _zip(tmp_path / "shop.zip", {"shelf/a.jpg": photos[2].read_bytes(), "shelf/b.png": photos[3].read_bytes(),
                                           "__MACOSX/shelf/._a.jpg": b"x", "readme.txt": b"hello"})
    sent = [photos[0], photos[1], *bad.values(), archive]
    summary, table, csv_file = _upload(demo_server, sent)

    names = [photos[0].name, photos[1].name, *[p.name for p in bad.values()],
             "shop.zip/shelf/a.jpg", "shop.zip/shelf/b.png", "shop.zip/readme.txt"]
    rows = table["data"]
    assert [r[1] for r in rows] == names  # one row per file, in upload order; the hidden entry is skipped
    good = {photos[0].name: photos[0], photos[1].name: photos[1],
            "shop.zip/shelf/a.jpg": photos[2], "shop.zip/shelf/b.png": photos[3]}
    want = dict(zip(good, tiny_classifier.predict(list(good.values())), strict=True))
    for thumb, name, label, confidence, unknown, error in rows:
        if name in good:  # the same label and confidence as the core, a thumbnail, no error
            assert (label, error) == (want[name].label, "") and thumb.startswith("<img src=\"data:image/jpeg")
            assert confidence == pytest.approx(want[name].confidence, abs=1e-4)
            assert unknown == ""  # the tiny bundle has no unknown statistics: no flag either way
        else:
            assert error and not label and not thumb, name
    for kind, path in bad.items():
        (row,) = [r for r in rows if r[1] == path.name]
        assert tiny_classifier.predict([path])[0].error == row[5], kind  # the core's own reason
    assert "not an image" in rows[-1][5]
    assert f"**{len(names)} files, 4 classified**: 6 could not be used" in summary

    lines = _csv_rows(demo_server, csv_file)
    assert [r["file"] for r in lines] == names
    assert {r["label"] for r in lines if r["file"] in good} <= set(TINY_LABELS)
    assert all(r["error"] for r in lines if r["file"] not in good)
    assert all(r["top_k"].count(";") == len(TINY_LABELS) - 1 for r in lines if r["file"] in good)


def test_over_limit_uploads_are_refused_through_the_api(configured_demo, tmp_path):
    photos = write_good_images(tmp_path / "in", 5, seed=40)
    summary, table, csv_file = _upload(configured_demo, photos)
    assert "**Not classified:** 5 files: this demo classifies at most 4" in summary
    assert table["data"] in ([], [[]]) or not any(any(row) for row in table["data"])
    assert csv_file is None
    summary, _, _ = _upload(configured_demo, [_bomb(tmp_path / "bomb.zip")])
    assert "a zip bomb?" in summary
    summary, table, _ = _upload(configured_demo, photos[:2])  # the server still works after a refusal
    assert "**2 files, 2 classified**" in summary and len(table["data"]) == 2


def test_progress_follows_the_batches(tiny_bundle, tmp_path):
    """The handler reports progress after every batch (gr.Progress in the page)."""
    from model.explain import Explainer
    from settings import Settings
    from webui.upload import UploadTab

    settings = Settings(batch_size=2, runtime="tf")
    tab = UploadTab(Explainer(tiny_bundle, **settings.classifier_options()), settings)
    seen = []
    summary, table, _ = tab.classify([str(p) for p in write_good_images(tmp_path / "in", 5)],
                                     progress=lambda done, **_: seen.append(done))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)] and len(table) == 5 and "5 classified" in summary


# -- the unknown message, on a bundle with unknown statistics ----------------------------------------------------

@pytest.fixture(scope="module")
def honest_demo(honest_bundle):
    import demo
    from settings import Settings

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = demo.build_demo(honest_bundle, settings=settings, load=True)
    demo.launch(app, settings, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True)
    yield app
    app.close()


def test_the_demo_says_when_a_photo_is_not_one_it_knows(honest_demo, honest_bundle, tmp_path):
    """Through gradio_client on the honest bundle: a stripe pattern gets "This doesn't look like any of the 3 fruits
    I know. Nearest: LABEL." with the core's closest label and no percentage, and the top-k all the same; a photo
    like the training images does not; the Upload tab flags the same files, in words, and its CSV keeps the
    confidence."""
    from gradio_client import Client, handle_file

    from model.predict import load_classifier
    from tests.helpers.images import write_unknown_images

    odd, known = write_unknown_images(tmp_path / "odd", 1)[0], write_good_images(tmp_path / "known", 1)[0]
    core = load_classifier(honest_bundle, runtime="tf").predict([odd, known])
    assert core[0].unknown and not core[1].unknown  # the fixture's promise, checked where it is used
    client = Client(honest_demo.local_url, verbose=False, download_files=False)
    label, heatmap, verdict = client.predict(handle_file(str(odd)), api_name="/classify")
    closest, conf = core[0].top_k[0]
    assert f"This doesn't look like any of the 3 fruits I know. Nearest: {closest}." in verdict and "%" not in verdict
    assert len(label["confidences"]) == len(TINY_LABELS) and label["label"] == closest and heatmap is not None
    for api in ("/classify", "/predict"):
        *_, verdict = client.predict(handle_file(str(known)), api_name=api)
        assert "doesn't look like" not in verdict and core[1].label in verdict, api
    label, verdict = client.predict(handle_file(str(odd)), api_name="/predict")
    assert "This doesn't look like any of the 3 fruits I know" in verdict and "%" not in verdict

    summary, table, csv_file = client.predict([handle_file(str(odd)), handle_file(str(known))],
                                              api_name="/classify_upload")
    assert [r[4] for r in table["data"]] == ["yes", "no"]
    assert table["data"][0][2:4] == [f"not one of the 3 fruits I know (nearest: {closest})", None]
    assert "1 do not look like any of the fruits I know" in summary
    rows = _csv_rows(honest_demo, csv_file)
    assert [r["unknown"] for r in rows] == ["true", "false"]
    assert (rows[0]["label"], rows[0]["nearest"]) == (f"not one of the 3 fruits I know (nearest: {closest})", closest)
    assert float(rows[0]["confidence"]) == pytest.approx(conf, abs=1e-4)  # kept in the CSV, for those who want it
    assert float(rows[0]["unknown_score"]) == pytest.approx(core[0].unknown_score, rel=1e-4)
