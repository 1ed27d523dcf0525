"""docker-compose.yml is valid (checked without an engine) and runs what `amosync dev` runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.devstack import (
    FUNCTIONS,
    MIGRATE_COMMAND,
    SCHEDULER_COMMAND,
    WORKER_TYPES,
    beanstalkd_command,
    function_command,
    sandbox_command,
    worker_command,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SANDBOX = ROOT / "docker-compose.sandbox.yml"


def _example_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())["services"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "files",
    [["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(SANDBOX)]],
    ids=["prod", "sandbox"],
)
def test_compose_config_is_valid_without_an_engine(tmp_path: Path, files: list[str]) -> None:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose (Debian package) is needed for the static check"
    env = {**os.environ, **_example_env()}
    result = subprocess.run(
        [tool, *files, "--profile", "sandbox", "config", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_secrets(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    assert tool
    env = {k: v for k, v in os.environ.items() if k not in _example_env()}
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "set " in result.stderr and ".env" in result.stderr


def test_one_container_per_function_built_from_the_shared_dockerfile(services: dict) -> None:  # type: ignore[type-arg]
    for name in FUNCTIONS:
        assert services[name]["build"]["args"]["FUNCTION"] == name
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = function_command("NAME", 8080, host="0.0.0.0")
    # The container's CMD passes the same flags `amosync dev` passes.
    for flag in ("--source", "--target", "--host", "--port"):
        assert flag in cmd and flag in dockerfile
    assert "functions/${FUNCTION}/main.py" in dockerfile
    assert re.search(r"--host 0\.0\.0\.0", dockerfile)
    # The app user has a home: gunicorn's control socket lives there (found under podman).
    assert re.search(r"useradd .*--create-home", dockerfile)


def test_consumers_scheduler_and_migrate_run_the_dev_commands(services: dict) -> None:  # type: ignore[type-arg]
    for worker_type in WORKER_TYPES:
        assert services[f"worker-{worker_type}"]["command"] == worker_command(worker_type)
    assert services["scheduler"]["command"] == SCHEDULER_COMMAND
    assert services["migrate"]["command"] == MIGRATE_COMMAND


def test_sandbox_services_are_in_the_sandbox_profile() -> None:
    services = yaml.safe_load(SANDBOX.read_text())["services"]
    for vendor, port in (("amocrm", 8101), ("unisender", 8102)):
        service = services[f"sandbox-{vendor}"]
        assert service["profiles"] == ["sandbox"]
        assert service["command"] == sandbox_command(vendor, port, host="0.0.0.0")


def test_gateway_uses_the_same_template_and_gates_on_health(services: dict) -> None:  # type: ignore[type-arg]
    gateway = services["gateway"]
    assert any("gateway/amosync.conf.template" in v for v in gateway["volumes"])
    for name in FUNCTIONS:
        assert gateway["depends_on"][name]["condition"] == "service_healthy"
    template = (ROOT / "gateway" / "amosync.conf.template").read_text()
    names = set(re.findall(r"\$\{(AMOSYNC_[A-Z_]+)\}", template))
    assert names <= set(gateway["environment"]), names - set(gateway["environment"])


def test_beanstalkd_keeps_a_binlog_on_a_volume(services: dict) -> None:  # type: ignore[type-arg]
    beanstalkd = services["beanstalkd"]
    binlog = beanstalkd["command"][beanstalkd["command"].index("-b") + 1]
    assert beanstalkd["command"] == beanstalkd_command(11300, binlog, host="0.0.0.0")
    assert any(v.endswith(":" + binlog) for v in beanstalkd["volumes"])
    assert beanstalkd["healthcheck"]
    # As PID 1 beanstalkd ignores SIGTERM; an init forwards it (found running it under podman).
    assert beanstalkd["init"] is True


def test_app_services_wait_for_migrations_and_healthy_dependencies(services: dict) -> None:  # type: ignore[type-arg]
    for name in (*FUNCTIONS, "scheduler", *(f"worker-{t}" for t in WORKER_TYPES)):
        deps = services[name]["depends_on"]
        assert deps["mysql"]["condition"] == "service_healthy"
        assert deps["beanstalkd"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


APP_SERVICES = ("migrate", *FUNCTIONS, "scheduler", *(f"worker-{t}" for t in WORKER_TYPES))
# Where the services are is compose's business, not .env's.
COMPOSE_FIXED = {"MYSQL_HOST", "MYSQL_PORT", "BEANSTALK_HOST", "BEANSTALK_PORT"}


def _resolved_config(env: dict[str, str], *files: Path, cwd: Path) -> dict:  # type: ignore[type-arg]
    tool = shutil.which("docker-compose")
    assert tool
    args = [tool]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run(
        [*args, "--profile", "sandbox", "config"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def test_every_setting_reaches_every_app_service(tmp_path: Path) -> None:
    """A value set in the environment (.env) arrives in each app container as that setting."""
    from shared.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    # Numbers, so that compose accepts them where it uses a value itself (the gateway's port).
    sentinels = {name: str(20000 + i) for i, name in enumerate(sorted(names - COMPOSE_FIXED))}
    config = _resolved_config({**_example_env(), **sentinels}, COMPOSE, cwd=tmp_path)
    for service in APP_SERVICES:
        environment = config["services"][service]["environment"]
        missing = sorted(names - set(environment))
        assert not missing, f"{service} does not get {missing}"
        wrong = {n: environment[n] for n, v in sentinels.items() if environment[n] != v}
        assert not wrong, f"{service} does not pass these on from .env: {wrong}"


def test_prod_compose_has_no_emulators_and_real_vendor_urls(tmp_path: Path) -> None:
    config = _resolved_config(_example_env(), COMPOSE, cwd=tmp_path)
    assert not [name for name in config["services"] if name.startswith("sandbox-")]
    env = config["services"]["webhook"]["environment"]
    assert env["UNISENDER_API_URL"] == _example_env()["UNISENDER_API_URL"]
    assert env["SANDBOX_MODE"] == "false"


def test_sandbox_override_points_every_app_service_at_the_emulators(tmp_path: Path) -> None:
    config = _resolved_config(_example_env(), COMPOSE, SANDBOX, cwd=tmp_path)
    services = config["services"]
    amocrm = services["sandbox-amocrm"]
    gateway = services["gateway"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["SANDBOX_MODE"] == "true", name
        assert env["AMOCRM_API_URL"] == "http://sandbox-amocrm:8101", name
        assert env["UNISENDER_API_URL"] == "http://sandbox-unisender:8102/en/api", name
        # Browser-facing: the consent page and the redirect back, through published ports.
        assert env["AMOCRM_AUTH_URL"] == "http://localhost:8101/oauth", name
        assert env["AMOCRM_REDIRECT_URI"] == amocrm["environment"]["AMOCRM_REDIRECT_URI"], name
        assert env["AMOCRM_REDIRECT_URI"].startswith(env["PUBLIC_URL"] + "/"), name
    # PUBLIC_URL (webhooks, the widget install) is localhost:8080 for the browser and for the
    # amoCRM emulator alike: the emulator lives in the gateway's network namespace.
    public = services["auth"]["environment"]["PUBLIC_URL"]
    assert public == "http://localhost:8080"
    assert amocrm["network_mode"] == "service:gateway"
    assert "ports" not in amocrm
    published = {(p["published"], p["target"]) for p in gateway["ports"]}
    assert {(8080, 8080), (8101, 8101)} <= {(int(a), int(b)) for a, b in published}
    assert "sandbox-amocrm" in gateway["networks"]["default"]["aliases"]
    disable_hook = amocrm["environment"]["SANDBOX_AMOCRM_DISABLE_HOOK_URL"]
    assert disable_hook == f"{public}/auth/disable"
    # Secrets the two sides compare come from the same .env.
    for key in ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET"):
        assert amocrm["environment"][key] == services["auth"]["environment"][key]
    keys = services["sandbox-unisender"]["environment"]["SANDBOX_UNISENDER_KEYS"]
    assert keys == _example_env()["SANDBOX_UNISENDER_KEYS"]


def _make_dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_make_up_uses_the_sandbox_override_and_up_prod_does_not() -> None:
    assert (
        "docker compose -f docker-compose.yml -f docker-compose.sandbox.yml --profile sandbox up"
        in _make_dry_run("up")
    )
    prod = _make_dry_run("up-prod")
    assert "docker compose" in prod and "sandbox" not in prod


# The images compose builds from and runs: public defaults, each replaceable by a local image
# (a mirror, or the Debian stand-ins a registry-less machine builds).
IMAGE_VARIABLES = {
    "AMOSYNC_PYTHON_BASE_IMAGE": "python:3.11-slim",
    "AMOSYNC_BEANSTALKD_BASE_IMAGE": "debian:bookworm-slim",
    "AMOSYNC_MYSQL_IMAGE": "mysql:8.0",
    "AMOSYNC_NGINX_IMAGE": "nginx:1.27-alpine",
}
PYTHON_BUILT = (*APP_SERVICES, "sandbox-amocrm", "sandbox-unisender")


def _images(config: dict) -> dict[str, str]:  # type: ignore[type-arg]
    services = config["services"]
    found = {
        "AMOSYNC_MYSQL_IMAGE": services["mysql"]["image"],
        "AMOSYNC_NGINX_IMAGE": services["gateway"]["image"],
        "AMOSYNC_BEANSTALKD_BASE_IMAGE": services["beanstalkd"]["build"]["args"]["BASE_IMAGE"],
    }
    bases = {services[name]["build"]["args"]["BASE_IMAGE"] for name in PYTHON_BUILT}
    assert len(bases) == 1, f"the Python-built services disagree on their base: {bases}"
    found["AMOSYNC_PYTHON_BASE_IMAGE"] = bases.pop()
    return found


def test_images_default_to_the_public_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in IMAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = _resolved_config(_example_env(), COMPOSE, SANDBOX, cwd=tmp_path)
    assert _images(config) == IMAGE_VARIABLES


def test_every_image_can_be_a_local_one(tmp_path: Path) -> None:
    local = {name: f"localhost/stand-in-{i}:test" for i, name in enumerate(IMAGE_VARIABLES)}
    config = _resolved_config({**_example_env(), **local}, COMPOSE, SANDBOX, cwd=tmp_path)
    assert _images(config) == local
    # The prod file alone takes them too.
    prod = _resolved_config({**_example_env(), **local}, COMPOSE, cwd=tmp_path)
    assert prod["services"]["mysql"]["image"] == local["AMOSYNC_MYSQL_IMAGE"]


@pytest.mark.parametrize(
    ("dockerfile", "default"),
    [("Dockerfile", "python:3.11-slim"), ("docker/beanstalkd.Dockerfile", "debian:bookworm-slim")],
)
def test_dockerfiles_take_their_base_from_a_build_argument(dockerfile: str, default: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert f"ARG BASE_IMAGE={default}\n" in text
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"]
    # The ARG precedes the FROM that uses it (an ARG after FROM would not reach it).
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}")
