"""docker-compose.yml and Dockerfile, checked statically (no Docker engine needed), and each service's modules
imported from outside the repo root, as the installed package (the image runs them from /app, a user anywhere)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys

import yaml

from tests.helpers import ROOT

PROJECT = ("settings", "model", "db", "worker", "train")


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


def _project_commands() -> dict[str, list[str]]:
    commands = {}
    for name, svc in _compose()["services"].items():
        if "image" in svc and "build" not in svc:
            continue  # third-party image
        argv = svc.get("entrypoint", []) + svc.get("command", [])
        commands[name] = shlex.split(argv) if isinstance(argv, str) else argv
    return commands


def _modules_of(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Celery apps, modules) that the command loads: `-A APP`, `-m MODULE`, a script's project imports."""
    if argv[0] == "celery":
        return [argv[argv.index("-A") + 1]], []
    if argv[:2] == ["python", "-m"]:
        return [], [argv[2]]
    tree = ast.parse((ROOT / argv[1]).read_text())
    names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
    return [], sorted({m for m in names if m.split(".")[0] in PROJECT})


def test_compose_commands_import_from_outside_the_repo_root(tmp_path):
    apps, modules = set(), set()
    for argv in _project_commands().values():
        a, m = _modules_of(argv)
        apps.update(a)
        modules.update(m)
    assert apps == {"worker"} and {"db.migrate", "worker.submit", "settings"} <= modules
    # A fresh interpreter in an empty folder: nothing but the installed package can provide these.
    code = f"""
import importlib, json, sys
from celery import Celery
from celery.app.utils import find_app
found = {{a: type(find_app(a)).__name__ for a in {sorted(apps)!r}}}
for m in {sorted(modules)!r}:
    importlib.import_module(m)
heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
print(json.dumps({{"apps": found, "heavy": heavy, "root_on_path": {str(ROOT)!r} in sys.path}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"apps": {"worker": "Celery"}, "heavy": [], "root_on_path": False}


def test_package_is_installed_by_make_venv_and_the_dockerfile(tmp_path):
    # Outside the repo root, where the build's *.egg-info folder cannot stand in for the installed distribution.
    code = "from importlib.metadata import distribution; print(distribution('densenet121-classifier')" \
           ".read_text('direct_url.json'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"url": ROOT.as_uri(), "dir_info": {"editable": True}}
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(BIN)/.installed:"):makefile.index("venv: $(BIN)/.installed")]
    assert "pip install -q --no-deps -e ." in recipe and "pyproject.toml" in recipe.splitlines()[0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.index("COPY . .") < dockerfile.index("pip install --no-deps -e .")


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


def _published(svc: dict) -> list[str]:
    return [str(p) for p in svc.get("ports", [])]


def test_redis_and_postgres_are_published_only_by_the_host_override():
    services = _compose()["services"]
    # A machine that runs its own Redis and PostgreSQL (this one, most laptops) must be able to `up` the stack.
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]
    # `depends_on: service_healthy` gives up on an unhealthy dependency: a slow first start must not count.
    assert all("start_period" in services[name]["healthcheck"] for name in ("redis", "postgres"))
    assert _published(services["flower"]) == ["${FLOWER_BIND:-127.0.0.1:5555}:5555"]
    host = yaml.safe_load((ROOT / "docker-compose.host.yml").read_text())["services"]
    assert set(host) <= set(services)
    assert _published(host["redis"]) == ["127.0.0.1:${REDIS_HOST_PORT:-6379}:6379"]
    assert _published(host["postgres"]) == ["127.0.0.1:${POSTGRES_HOST_PORT:-5432}:5432"]
    # A host-side submitter records host paths and its host MODEL_DIR: the workers must open both at those paths.
    part = r"(\$\{[^}]*\}[^:$]*|[^:$]+)"  # a path, or a ${VAR...} (which may hold colons) and what follows it
    for name in ("worker", "gpu-worker"):
        mounts = [re.fullmatch(f"{part}:{part}:(ro|rw)", v).groups() for v in host[name]["volumes"]]
        assert ("${IMAGES_DIR}", "ro") in [(target, mode) for source, target, mode in mounts
                                          if source.startswith("${IMAGES_DIR")]
        assert [(target, mode) for source, target, mode in mounts if source == "./model"] == \
            [("${PWD:?run from the checkout root}/model", "ro")]
    from settings import SHIPPED_MODEL_DIR

    assert SHIPPED_MODEL_DIR.parent == ROOT / "model"  # what `./model` mounted at $PWD/model serves


def test_submitter_and_workers_see_the_same_images_and_the_recipes_say_so():
    services = _compose()["services"]
    mount = "${IMAGES_DIR:-./data/in}:/data/in:ro"
    for name in ("worker", "gpu-worker", "demo", "submit"):
        assert services[name]["volumes"] == [mount], name
    assert services["demo"]["environment"]["DEMO_ALLOWED_ROOTS"] == "/data/in"
    # Every documented `run ... submit`: no mount of its own (the service's /data/in would hide it, and the workers
    # would not see it), IMAGES_DIR given, a folder under /data/in.
    header = [line for line in (ROOT / "docker-compose.yml").read_text().splitlines() if line.startswith("#")]
    texts = {"docker-compose.yml": "\n".join(header), "README.md": (ROOT / "README.md").read_text(),
             "docs/deployment.md": (ROOT / "docs/deployment.md").read_text()}
    recipes = []
    for where, text in texts.items():
        lines = text.splitlines()
        for before, line in zip(["", *lines], lines, strict=False):
            if re.search(r"docker[ -]compose .*\brun .*\bsubmit\b", line):
                recipe = line[line.index("IMAGES_DIR="):] if "IMAGES_DIR=" in line else line
                recipes.append((where, recipe))
                given = "IMAGES_DIR=" in line or re.fullmatch(r"echo IMAGES_DIR=\S+ >> \.env", before)
                assert given and " -v " not in recipe and " --volume" not in recipe, (where, line)
                folder = shlex.split(recipe.split("submit", 1)[1].split("`")[0].split("#")[0])[0]
                assert folder == "/data/in" or folder.startswith("/data/in/"), (where, line)
    assert {where for where, _ in recipes} == set(texts), recipes


def test_demo_auth_reaches_the_demo_and_the_open_demo_is_documented():
    demo = _compose()["services"]["demo"]
    assert demo["environment"]["DEMO_AUTH"] == "${DEMO_AUTH:-}"
    assert _published(demo) == ["${DEMO_BIND:-7860}:7860"]  # all interfaces unless DEMO_BIND says otherwise
    from demo import parse_auth

    assert parse_auth("") is None  # DEMO_AUTH unset: compose passes an empty string, the demo runs open
    readme = (ROOT / "README.md").read_text()
    assert "DEMO_AUTH" in readme and "review" in readme[readme.index("DEMO_AUTH") - 600:][:1200]
    assert "DEMO_AUTH" in (ROOT / "docs/deployment.md").read_text()
    assert "DEMO_AUTH" in (ROOT / "docker-compose.yml").read_text().split("x-app:")[0]


def test_gpu_worker_runs_tensorflow_on_the_gpu_build_and_secrets_stay_out_of_the_image():
    gpu = _compose()["services"]["gpu-worker"]
    assert "and-cuda" in gpu["build"]["args"]["TF_PACKAGE"]
    # The GPU build swaps TensorFlow only: RUNTIME=auto would pick the CPU onnxruntime and leave the GPU idle.
    assert gpu["environment"]["RUNTIME"] == "tf"
    assert gpu["environment"]["REDIS_URL"] == _compose()["services"]["worker"]["environment"]["REDIS_URL"]
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # DEMO_AUTH and friends, on this machine only
