"""docker-compose.yml and Dockerfile, checked statically (no Docker engine needed), and each service's modules
imported from outside the repo root, as the installed package (the image runs them from /app, a user anywhere)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
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


def _header() -> str:
    """docker-compose.yml's opening comment: the documented ways to run it."""
    return "\n".join(line for line in (ROOT / "docker-compose.yml").read_text().splitlines() if line.startswith("#"))


def test_services_scale_start_and_mount_as_documented():
    compose = _compose()
    services = compose["services"]
    # Compose refuses --scale on a service with a container_name or a fixed host port.
    scaled = re.findall(r"--scale ([\w-]+)=\d+", _header())
    assert scaled
    for name in scaled:
        assert "container_name" not in services[name] and not _published(services[name]), name
    # Each documented `--profile P up SERVICE` names a service in that profile, and a service that reserves a GPU
    # is in one: a plain `up` must start on a machine without a GPU.
    for profile, name in re.findall(r"--profile ([\w-]+) up -d ([\w-]+)", _header()):
        assert profile in services[name].get("profiles", []), (profile, name)
    for name, svc in services.items():
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if any("gpu" in d.get("capabilities", []) for d in devices):
            assert svc.get("profiles"), name
    # A named volume a service mounts must be declared (compose refuses it otherwise); a declared one is used.
    named = set()
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~", "$")):
                named.add(source)
    assert named and named == set(compose.get("volumes") or {})


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
    # The taught bundles too (the Teach view writes them, a job names one with --model): one volume at MODELS_DIR.
    models = f"models:{services['demo']['environment']['MODELS_DIR']}"
    for name in ("worker", "gpu-worker", "demo", "submit"):
        assert services[name]["volumes"] == [mount, models], name
        assert services[name]["environment"]["MODELS_DIR"] == "/app/data/models", name
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


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message} against the variables `given` (.env, the shell)."""
    def one(m: re.Match) -> str:
        return given.get(m["name"]) or (m["default"] if m["op"] == ":-" else "")

    return re.sub(r"\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<default>[^}]*))?\}", one, value)


def _parse_commands(tmp_path, given: dict[str, str]) -> dict[str, dict]:
    """Each project service's command through its program's own parser (tests/helpers/commands.py), with the
    service's environment; `submit` with the arguments the compose file's header documents for it. One more entry,
    "demo, nothing given", is the demo with no variable given at all."""
    services = _compose()["services"]
    documented = re.search(r"run --rm submit (.+?)(\s{2,}|$)", _header(), re.M)

    def env(name: str, given: dict[str, str]) -> dict[str, str]:
        return {key: _interpolate(str(value), given) for key, value in services[name].get("environment", {}).items()}

    jobs = []
    for name, argv in _project_commands().items():
        if name == "submit":
            argv = services[name]["entrypoint"] + shlex.split(documented[1])
        jobs.append([name, argv, env(name, given)])
    jobs.append(["demo, nothing given", _project_commands()["demo"], env("demo", {})])
    done = subprocess.run([sys.executable, "-m", "tests.helpers.commands"], input=json.dumps(jobs), cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, _, variables in jobs:
        assert "parsed" in results[name], (name, results[name])
        read = results[name]["settings"]
        for key, value in variables.items():  # every name a service sets is one the settings read, with its value
            if not key.startswith(("TF_", "POSTGRES_")):
                assert key.lower() in read and str(read[key.lower()]) == value, (name, key, read.get(key.lower()))
    return {name: result["parsed"] for name, result in results.items()}


def _container_port(svc: dict) -> int:
    (mapping,) = _published(svc)
    return int(mapping.rsplit(":", 1)[1])


def test_every_compose_command_is_one_its_program_accepts(tmp_path):
    """A renamed flag, a port the program does not listen on or an environment name the settings do not read
    fails here, not at `docker compose up`."""
    parsed = _parse_commands(tmp_path, given={"DEMO_AUTH": "ann:secret"})
    for name in ("worker", "gpu-worker"):  # one process per container: compose scales with --scale worker=N
        assert parsed[name]["concurrency"] == 1, parsed[name]
    services = _compose()["services"]
    assert parsed["demo"]["host"] == "0.0.0.0" and parsed["demo"]["port"] == _container_port(services["demo"])
    assert parsed["demo"]["auth"] == "ann:secret"  # DEMO_AUTH in .env or the shell reaches the demo's login
    assert parsed["flower"]["port"] == _container_port(services["flower"])
    assert parsed["submit"]["folder"] == "/data/in" and parsed["submit"]["wait"] is True
    from demo import parse_auth

    # DEMO_AUTH unset: compose passes an empty string, and the demo runs without a login (not a refusal to start).
    assert parsed["demo, nothing given"]["auth"] == "" and parse_auth("") is None


def test_gpu_worker_runs_tensorflow_on_the_gpu_build_and_secrets_stay_out_of_the_image():
    gpu = _compose()["services"]["gpu-worker"]
    assert "and-cuda" in gpu["build"]["args"]["TF_PACKAGE"]
    # The GPU build swaps TensorFlow only: RUNTIME=auto would pick the CPU onnxruntime and leave the GPU idle.
    assert gpu["environment"]["RUNTIME"] == "tf"
    assert gpu["environment"]["REDIS_URL"] == _compose()["services"]["worker"]["environment"]["REDIS_URL"]
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # DEMO_AUTH and friends, on this machine only
