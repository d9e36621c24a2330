"""The running demo through its HTTP API (gradio_client), on the tiny real DenseNet121 bundle."""

from __future__ import annotations

import json

import pytest

from model.images import ImageError, load_image
from tests.helpers import TINY_LABELS, assert_top1

pytestmark = pytest.mark.slow  # a server on the tiny network


@pytest.fixture(scope="module")
def client(demo_server):
    from gradio_client import Client

    return Client(demo_server.local_url, verbose=False, download_files=False)


def _predict(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/classify")


def _confidences(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def _completed(stream: str) -> list:
    """The outputs in a Gradio REST call's event stream: the data line after `event: complete`."""
    lines = stream.splitlines()
    return json.loads(lines[lines.index("event: complete") + 1].removeprefix("data:"))


def test_prediction_matches_the_core(client, tiny_classifier, good_images):
    paths = good_images(2)
    for path, want in zip(paths, tiny_classifier.predict_probs(paths), strict=True):
        label, heatmap, verdict = _predict(client, path)
        confidences = [c["confidence"] for c in label["confidences"]]
        assert confidences == sorted(confidences, reverse=True)  # the top-k, most probable first
        # Every class's probability as the core computes it; the untrained network's are near-uniform, so the
        # label is checked as the top-1 of those, up to ties, not as the core's own pick.
        assert _confidences(label) == pytest.approx(dict(zip(TINY_LABELS, want.tolist(), strict=True)), abs=1e-5)
        assert_top1([label["label"]], [want], TINY_LABELS)
        assert heatmap is not None  # the Grad-CAM overlay came back as an image file
        assert label["label"] in verdict


def test_bad_inputs_give_the_error_message(client, bad_images):
    for kind, path in bad_images().items():
        with pytest.raises(ImageError) as err:
            load_image(path, 32)
        label, heatmap, verdict = _predict(client, path)
        assert str(err.value) in verdict, kind
        assert not label or not label.get("confidences"), kind
        assert heatmap is None, kind
    label, heatmap, verdict = client.predict(None, api_name="/classify")
    assert "No image" in verdict


def test_predict_endpoint_gives_the_top_k_without_a_heatmap(client, tiny_classifier, good_images, bad_images):
    from gradio_client import handle_file

    good = good_images(2, seed=5)
    for path, want in zip(good, tiny_classifier.predict_probs(good), strict=True):
        label, verdict = client.predict(handle_file(str(path)), api_name="/predict")
        confidences = [c["confidence"] for c in label["confidences"]]
        assert confidences == sorted(confidences, reverse=True)  # the top-k, most probable first
        assert _confidences(label) == pytest.approx(dict(zip(TINY_LABELS, want.tolist(), strict=True)), abs=1e-5)
        assert_top1([label["label"]], [want], TINY_LABELS)
        assert label["label"] in verdict and "heatmap" not in verdict
    for kind, path in bad_images().items():
        label, verdict = client.predict(handle_file(str(path)), api_name="/predict")
        assert "Cannot use this image" in verdict and not (label or {}).get("confidences"), kind


def test_concurrent_requests_all_succeed_and_share_forward_passes(client, tiny_classifier, good_images, monkeypatch):
    from gradio_client import handle_file

    from model.explain import Explainer

    batch_sizes: list[int] = []  # what the server's one forward pass per batch saw (it runs in this process)
    predict = Explainer.predict

    def counted(self, images, *args, **kwargs):
        batch_sizes.append(len(images))
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(Explainer, "predict", counted)
    paths = good_images(8, seed=10)
    jobs = [client.submit(handle_file(str(p)), api_name="/classify") for p in paths]
    results = [job.result(timeout=120) for job in jobs]
    want = tiny_classifier.predict_probs(paths)  # each answer belongs to its own image, whatever batch it was in
    for r, probs in zip(results, want, strict=True):
        assert _confidences(r[0]) == pytest.approx(dict(zip(TINY_LABELS, probs.tolist(), strict=True)), abs=1e-5)
    assert_top1([r[0]["label"] for r in results], want, TINY_LABELS)
    assert sum(batch_sizes) == 8
    assert max(batch_sizes) > 1  # at least one forward pass served several requests


def test_batch_tab_degrades_without_a_broker(configured_demo):
    from gradio_client import Client

    client = Client(configured_demo.local_url, verbose=False, download_files=False)
    message, job_id, _ = client.predict("photos", False, api_name="/submit_job")
    assert "no task broker" in message and job_id == ""
    message, job_id, _ = client.predict("/etc", False, api_name="/submit_job")
    assert "not inside a folder open to batch jobs" in message


def test_plain_rest_calls_and_the_limits_the_server_keeps(configured_demo, tiny_classifier, tmp_path, good_images):
    """The README's curl recipe (image inline as a data URL, no session), and the memory it may cost: each such
    call makes a Gradio session, and only DEMO_SESSION_CAPACITY of them are kept. Uploads obey DEMO_MAX_FILE_SIZE."""
    import base64

    import httpx

    app = configured_demo
    url = app.local_url.rstrip("/")
    image = good_images(1)[0]
    mime = "image/png" if image.suffix == ".png" else "image/jpeg"
    data = {"url": f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode()}",
            "meta": {"_type": "gradio.FileData"}}
    want = tiny_classifier.predict_probs([image])
    with httpx.Client(timeout=120) as http:
        for _ in range(8):
            event_id = http.post(f"{url}/gradio_api/call/predict", json={"data": [data]}).json()["event_id"]
            reply = http.get(f"{url}/gradio_api/call/predict/{event_id}").text
            assert "event: complete" in reply, reply
            label = _completed(reply)[0]
            assert _confidences(label) == pytest.approx(dict(zip(TINY_LABELS, want[0].tolist(), strict=True)),
                                                        abs=1e-5)
            assert_top1([label["label"]], want, TINY_LABELS)
    assert 1 <= len(app.state_holder.session_data) <= 3
    # An upload over DEMO_MAX_FILE_SIZE is refused before it reaches the model.
    big = tmp_path / "big.jpg"
    big.write_bytes(image.read_bytes() + bytes(200_000))
    with open(big, "rb") as f:
        refused = httpx.post(f"{url}/gradio_api/upload", files={"files": (big.name, f)}, timeout=60)
    assert refused.status_code == 413, refused.text
