"""docker-compose.yml and Dockerfile, checked statically (no Docker engine needed)."""

from __future__ import annotations

import importlib.util
import shlex

import yaml

from tests.batchutil import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _check_command(argv: list[str]) -> None:
    """The command names a module, script or Celery app of this project that exists."""
    if argv[0] == "celery":
        app = argv[argv.index("-A") + 1]
        assert importlib.util.find_spec(app) is not None, app
        assert argv[argv.index("-A") + 2] in ("worker", "flower"), argv
    elif argv[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(argv[2]) is not None, argv
        assert (ROOT / argv[2].replace(".", "/")).with_suffix(".py").exists() or \
            (ROOT / argv[2].replace(".", "/") / "__main__.py").exists(), argv
    elif argv[0] == "python":
        assert (ROOT / argv[1]).is_file(), f"{argv[1]} does not exist"
    elif argv[0] != "redis-server":
        raise AssertionError(f"unexpected command {argv}")


def test_compose_services_run_real_project_commands():
    services = _compose()["services"]
    assert {"redis", "postgres", "worker", "gpu-worker", "demo", "flower", "migrate"} <= set(services)
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            continue  # third-party image
        argv = svc.get("entrypoint", []) + svc.get("command", [])
        argv = shlex.split(argv) if isinstance(argv, str) else argv
        if name == "submit":
            argv = argv[:3]
        _check_command(argv)
        assert svc["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert svc["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_worker_is_scalable_and_gpu_variant_is_a_profile():
    services = _compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N needs both absent
    assert worker["command"][worker["command"].index("--concurrency") + 1] == "1"
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["demo"]["command"] == ["python", "demo.py", "--host", "0.0.0.0"]


def test_dockerfile_installs_requirements_and_settings_fields_exist():
    from settings import Settings

    text = (ROOT / "Dockerfile").read_text()
    assert "requirements.txt" in text and "FROM python:3.11" in text
    fields = {f.upper() for f in Settings.model_fields}
    for svc in _compose()["services"].values():
        for key in (svc.get("environment") or {}):
            assert key in fields or key.startswith(("TF_", "POSTGRES_")), key
