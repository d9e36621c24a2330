"""Safe to share (issue 26): a demo other machines can reach writes only for someone trusted, and says so.

Without a server: who may write (`webui.access.writes_open`), how `demo.main` decides it from its flags and the
environment, and the write log. Through served demos (one per mode): bound to 0.0.0.0 without a login, the write
endpoints are absent and refused and nothing is written, while classifying works and a photo the model does not
know gets words without a percentage; with a login, an anonymous caller is refused and a logged-in one submits a job,
logged under their name. On loopback everything is served: `demo_server` of the conftest.
"""

from __future__ import annotations

import logging
import os

import pytest
import sqlalchemy as sa

from tests.demo.reviewapp import add_photo_job, real_files
from tests.helpers import redis_db
from tests.helpers.databases import migrated_sessions, url_of
from tests.helpers.images import write_good_images, write_unknown_images
from tests.helpers.processes import free_port
from webui.access import WRITES_OFF_NOTE, is_loopback, log_write, writes_open

# The write views' endpoints: folder jobs and their listings (Batch), Review, Compare, Teach and the model switch.
WRITES = {"/submit_job", "/fleet_status", "/list_jobs", "/job_report", "/review_next", "/review_set", "/compare_jobs",
          "/teach", "/teach_from_reviews", "/use_model"}
READS = {"/classify", "/predict", "/classify_upload"}
# A Redis database of this module's own: a job submitted here must not reach another test's workers.
REDIS_URL = os.environ.get("TEST_ACCESS_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db(11)}")
USER = ("ann", "s3cret-pass")


class _Settings:
    def __init__(self, auth: str | None = None, open_writes: bool = False):
        self.demo_auth, self.demo_open_writes = auth, open_writes


# -- who may write ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2", "LOCALHOST"])
def test_loopback_writes(host, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert is_loopback(host) and writes_open(_Settings(), host=host, share=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "10.0.0.5", "demo.example.org"])
def test_reachable_from_other_machines_is_read_only_without_a_login(host, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not writes_open(_Settings(), host=host, share=False)
    assert writes_open(_Settings(auth="ann:pw"), host=host, share=False)  # a login: Gradio refuses anonymous calls
    assert writes_open(_Settings(open_writes=True), host=host, share=False)  # a private network, said so


def test_a_share_link_or_a_space_is_reachable_even_on_loopback(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not writes_open(_Settings(), host="127.0.0.1", share=True)
    monkeypatch.setenv("SPACE_ID", "someone/fruit-classifier")
    assert not writes_open(_Settings(), host="127.0.0.1", share=False)
    assert writes_open(_Settings(auth="ann:pw"), host="0.0.0.0", share=True)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # host None: where Gradio itself would bind
    monkeypatch.delenv("SPACE_ID")
    assert not is_loopback(None) and not writes_open(_Settings(), host=None, share=False)


@pytest.mark.parametrize("argv, env, writes", [
    ([], {}, True),  # `make demo`: 127.0.0.1
    (["--host", "0.0.0.0"], {}, False),  # docker-compose's command
    (["--host", "0.0.0.0", "--auth", "ann:pw"], {}, True),
    (["--host", "0.0.0.0"], {"DEMO_AUTH": "ann:pw"}, True),
    (["--host", "0.0.0.0"], {"DEMO_OPEN_WRITES": "1"}, True),
    (["--share"], {}, False),
    ([], {"SPACE_ID": "someone/fruits", "GRADIO_SERVER_NAME": "0.0.0.0"}, False),  # as a Space starts it
])
def test_main_decides_from_host_share_space_and_settings(argv, env, writes, monkeypatch, tmp_path):
    import demo
    from settings import get_settings

    for name in ("DEMO_AUTH", "DEMO_OPEN_WRITES", "SPACE_ID", "GRADIO_SERVER_NAME", "DEMO_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env of a developer's
    get_settings.cache_clear()
    seen = {}
    monkeypatch.setattr(demo, "build_demo", lambda *a, **kw: seen.update(build=kw) or "app")
    monkeypatch.setattr(demo, "launch", lambda app, settings, **kw: seen.update(launch=kw))
    try:
        demo.main(["--model", str(tmp_path / "no-model"), *argv])
    finally:
        get_settings.cache_clear()
    assert seen["build"]["writes"] is writes
    assert (seen["launch"]["auth"] is not None) == ("ann:pw" in argv or "DEMO_AUTH" in env)


def test_compose_passes_both_switches_and_is_read_only_without_them(monkeypatch):
    import yaml

    from tests.helpers import ROOT

    compose = (ROOT / "docker-compose.yml").read_text()
    demo = yaml.safe_load(compose)["services"]["demo"]
    assert demo["environment"]["DEMO_AUTH"] == "${DEMO_AUTH:-}"
    assert demo["environment"]["DEMO_OPEN_WRITES"].startswith("${DEMO_OPEN_WRITES:-")
    host = demo["command"][demo["command"].index("--host") + 1]
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not writes_open(_Settings(), host=host, share=False)  # what a visitor gets by default: read-only
    header = compose.split("x-app:")[0]
    assert "read-only" in header and "DEMO_OPEN_WRITES=1" in header


def test_every_write_is_logged_with_the_user(caplog):
    class Request:
        username = "ann"
        client = type("Client", (), {"host": "10.0.0.7"})()

    with caplog.at_level(logging.INFO, logger="demo.writes"):
        log_write(Request(), "review_set", job_id="job-a", file="/data/in/x\nwrite fake by 'root'", label="apple")
        log_write(None, "submit_job", folder="/data/in")
    first, second = (r.getMessage() for r in caplog.records)
    assert first.startswith("write review_set by 'ann' from 10.0.0.7: job_id='job-a'") and "\n" not in first
    assert second == "write submit_job by 'anonymous' from ?: folder='/data/in'"


# -- served: open to the network, no login ------------------------------------------------------------------------

def _reachable_redis() -> str:
    import redis

    assert int(REDIS_URL.rsplit("/", 1)[-1] or 0) != 0, "never flush Redis database 0"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        client.flushdb()
    except redis.RedisError:
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    finally:
        client.close()
    return REDIS_URL


def _rows(sessions) -> tuple[int, int]:
    from db.models import Job, Review

    with sessions() as session:
        return (session.scalar(sa.select(sa.func.count()).select_from(Job)),
                session.scalar(sa.select(sa.func.count()).select_from(Review)))


def _endpoints(client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A results database with one job on real files (so a review would be valid) and a folder open to jobs."""
    tmp = tmp_path_factory.mktemp("access")
    database = migrated_sessions("sqlite", tmp)
    sessions = next(database)
    files = real_files(tmp / "photos", [0.4, 0.9])
    add_photo_job(sessions, "job-a", files, ["apple", "banana"], [0.4, 0.9])
    yield tmp, sessions, files, _reachable_redis()
    database.close()


def _start(bundle, served, host: str, **settings_kw):
    import demo
    from settings import Settings

    tmp, sessions, _, redis_url = served
    settings = Settings(database_url=url_of(sessions), redis_url=redis_url, demo_allowed_roots=str(tmp / "photos"),
                        **settings_kw)
    writes = writes_open(settings, host=host, share=False)
    app = demo.build_demo(bundle, settings=settings, writes=writes)
    auth = tuple(settings.demo_auth.split(":", 1)) if settings.demo_auth else None
    demo.launch(app, settings, server_name=host, server_port=free_port(), prevent_thread_lock=True, quiet=True,
                auth=auth)
    return app, writes


@pytest.fixture(scope="module")
def open_demo(honest_bundle, served, monkeypatch_module):
    monkeypatch_module.delenv("SPACE_ID", raising=False)
    app, writes = _start(honest_bundle, served, "0.0.0.0")
    assert writes is False
    yield app
    app.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_open_demo_serves_no_write_and_says_how_to_open_it(open_demo, served, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    _, sessions, files, _ = served
    before = _rows(sessions)
    client = Client(open_demo.local_url, verbose=False, download_files=False)
    endpoints = _endpoints(client)
    assert READS <= endpoints and not WRITES & endpoints, endpoints
    # Not merely unlisted: no function behind them at all, so no fn_index reaches one either.
    names = {getattr(fn.fn, "__qualname__", "") for fn in open_demo.fns.values()}
    assert not any(n.startswith(("BatchTab.", "ReviewView.", "CompareView.")) for n in names), names
    for call in (("photos", False, "/submit_job"), ("job-a", str(files[0]), "apple", "/review_set"),
                 ("job-a", "/review_next"), ("/list_jobs",), ("job-a", "job-a", "/compare_jobs")):
        *args, api = call
        with pytest.raises(ValueError, match="Cannot find a function"):
            client.predict(*args, api_name=api)
        reply = httpx.post(f"{open_demo.local_url}gradio_api/call/{api.strip('/')}", json={"data": list(args)},
                           timeout=30)
        assert reply.status_code >= 400 or "error" in httpx.get(
            f"{open_demo.local_url}gradio_api/call/{api.strip('/')}/{reply.json()['event_id']}", timeout=30).text
    assert _rows(sessions) == before  # no job, no review
    config = httpx.get(f"{open_demo.local_url}config", timeout=30).json()
    notes = [c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "writes-off"]
    assert notes == [WRITES_OFF_NOTE] and "DEMO_AUTH" in WRITES_OFF_NOTE and "DEMO_OPEN_WRITES=1" in WRITES_OFF_NOTE

    # Classifying works, and a photo like none of the known classes gets words, not a percentage.
    odd = write_unknown_images(tmp_path / "odd", 1)[0]
    known = write_good_images(tmp_path / "known", 1)[0]
    label, heatmap, verdict = client.predict(handle_file(str(odd)), api_name="/classify")
    assert "This doesn't look like any of the 3 fruits I know. Nearest: " in verdict and "%" not in verdict
    assert label["confidences"] and heatmap is not None  # the chart's values, as plain values over the API
    label, verdict = client.predict(handle_file(str(known)), api_name="/predict")
    assert label["label"] in verdict and "%" in verdict
    summary, table, _ = client.predict([handle_file(str(odd)), handle_file(str(known))], api_name="/classify_upload")
    assert "2 files, 2 classified" in summary and [r[4] for r in table["data"]] == ["yes", "no"]


# -- served: open to the network, with a login --------------------------------------------------------------------

@pytest.fixture(scope="module")
def login_demo(tiny_bundle, served):
    app, writes = _start(tiny_bundle, served, "0.0.0.0", demo_auth=":".join(USER))
    assert writes is True
    yield app
    app.close()


def test_with_a_login_anonymous_callers_are_refused_and_users_can_write(login_demo, served, caplog):
    import redis
    from gradio_client import Client

    tmp, sessions, files, redis_url = served
    with pytest.raises(Exception):  # noqa: B017, PT011 - how gradio_client says "login required" varies
        Client(login_demo.local_url, verbose=False, download_files=False).predict(api_name="/list_jobs")
    client = Client(login_demo.local_url, auth=USER, verbose=False, download_files=False)
    assert WRITES - {"/teach", "/teach_from_reviews", "/use_model"} <= _endpoints(client)
    jobs, reviews = _rows(sessions)
    with caplog.at_level(logging.INFO, logger="demo.writes"):
        message, job_id, _ = client.predict(str(tmp / "photos"), False, api_name="/submit_job")
        client.predict("job-a", str(files[0]), "apple", api_name="/review_set")
    try:
        assert message.startswith("Submitted job") and job_id, message
        assert _rows(sessions) == (jobs + 1, reviews + 1)
        logged = [r.getMessage() for r in caplog.records if r.name == "demo.writes"]
        assert any(m.startswith(f"write submit_job by 'ann' from 127.0.0.1: job_id='{job_id}'") for m in logged)
        assert any(m.startswith("write review_set by 'ann'") for m in logged), logged
    finally:
        redis.Redis.from_url(redis_url).flushdb()  # the job's chunks: no worker of this module runs them


# -- served: loopback -----------------------------------------------------------------------------------------------

def test_on_loopback_everything_is_served(demo_server):
    from gradio_client import Client

    client = Client(demo_server.local_url, verbose=False, download_files=False)
    assert READS | (WRITES - {"/teach", "/teach_from_reviews", "/use_model"}) <= _endpoints(client)
    config = demo_server.get_config_file()
    assert not [c for c in config["components"] if c.get("props", {}).get("elem_id") == "writes-off"]


# -- the page's chart for a photo flagged unknown (the browser test needs Chromium; this needs nothing) -----------

def test_the_pages_chart_says_closest_matches_not_an_answer():
    from model.predict import Prediction
    from settings import Settings
    from webui.classify import NOT_AN_ANSWER, ClassifyTab

    class Stub:
        model_dir = "stub"

        def predict(self, sources, top_k, explain):
            return [Prediction([("kiwi", 0.99), ("apple", 0.01)], unknown=True, unknown_score=9.0),
                    Prediction([("apple", 0.9), ("kiwi", 0.1)], unknown_score=0.1)][:len(sources)]

    tab = ClassifyTab(Stub(), Settings(), 21)
    labels, _, verdicts = tab.classify([{"path": "milk.jpg"}, {"path": "apple.jpg"}, None], required=False,
                                       explain=False, page=True)
    assert [(c.label, c.show_heading) for c in labels] == [(NOT_AN_ANSWER, False), ("Top 5", True), ("Top 5", True)]
    assert "Nearest: kiwi." in verdicts[0] and "%" not in verdicts[0] and verdicts[2] == ""
    plain, _, _ = tab.classify([{"path": "milk.jpg"}], required=True, explain=False)  # the API: values only
    assert plain == [{"kiwi": 0.99, "apple": 0.01}]
