"""deploy/: the image, compose, Kubernetes manifests and gunicorn.conf.py say what they should.

No container engine runs here, so the files are checked by reading them: every
YAML parses, and the essentials that an outage would hinge on (probes, ports,
users, selectors, secrets, the fhirServer allowlist) are in place and agree
with each other and with the service's configuration keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner
from gunicorn.app.base import Application, BaseApplication

from cds_service.commands.serve import serve
from cds_service.config import KEYS, load_settings
from cds_service.server import SERVER_KEYS, gunicorn_settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KNOWN_VARIABLES = {f"CDS_{key.name}" for key in (*KEYS, *SERVER_KEYS)}


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Every Kubernetes object under deploy/k8s, by kind (one of each)."""
    by_kind: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_documents(path):
            assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def pod(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


def container_port(container: dict, port: int | str) -> int:
    """A port given by number or by name, as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and selector.items() <= labels.items()


# -- YAML ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_file_parses_into_objects(path):
    documents = load_documents(path)
    assert documents and all(isinstance(doc, dict) for doc in documents)


# -- compose ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_the_service_on_postgres_16_once_it_is_healthy(compose):
    service, postgres = compose["services"]["cds-service"], compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_compose_gives_the_service_a_postgres_database_url(compose):
    url = compose["services"]["cds-service"]["environment"]["CDS_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in url


def test_compose_checks_the_service_health_at_healthz(compose):
    check = compose["services"]["cds-service"]["healthcheck"]
    assert check["test"][0] == "CMD" and "/healthz" in " ".join(check["test"])


def test_compose_sets_only_known_variables_and_never_an_empty_one(compose):
    environment = compose["services"]["cds-service"]["environment"]
    assert set(environment) <= KNOWN_VARIABLES
    # An empty value would be set, and fail to parse; unset ones are passed on as null.
    assert all(value is None or value.strip() for value in environment.values())


# -- Kubernetes ---------------------------------------------------------------------


def test_the_deployment_runs_at_least_two_replicas(manifests):
    assert manifests["Deployment"]["spec"]["replicas"] >= 2


def test_probes_ask_readyz_and_healthz_on_the_container_port(container):
    (port,) = [p["containerPort"] for p in container["ports"]]
    probes = {name: container[name]["httpGet"]
              for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] in ("/healthz", "/readyz")
    assert all(container_port(container, p["port"]) == port for p in probes.values())


def test_the_container_has_resource_requests_and_limits(container):
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_the_container_runs_unprivileged_on_a_read_only_root(pod, container):
    security = container["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def test_tmp_is_a_writable_empty_dir(pod, container):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def test_the_pod_runs_as_the_images_user(pod):
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == final_stage_user().split(":")[0]


def test_environment_comes_from_the_configmap_and_the_secret(manifests, container):
    sources = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    assert sources == {"configMapRef": manifests["ConfigMap"]["metadata"]["name"],
                       "secretRef": manifests["Secret"]["metadata"]["name"]}


def test_termination_grace_covers_the_graceful_timeout(manifests, pod, container):
    settings = gunicorn_settings(manifests["ConfigMap"]["data"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > (settings["graceful_timeout"]
                                                          + int(pre_stop[1]))


def test_the_service_selects_the_pods_and_targets_the_container_port(manifests, pod, container):
    service = manifests["Service"]["spec"]
    assert selects(service["selector"], pod["metadata"]["labels"])
    assert selects(manifests["Deployment"]["spec"]["selector"]["matchLabels"],
                   pod["metadata"]["labels"])
    (port,) = service["ports"]
    assert container_port(container, port["targetPort"]) == container["ports"][0]["containerPort"]


def test_the_autoscaler_scales_the_deployment_on_cpu(manifests):
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment",
                                                manifests["Deployment"]["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_the_disruption_budget_keeps_one_pod_of_the_deployment(manifests, pod):
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1
    assert selects(pdb["selector"]["matchLabels"], pod["metadata"]["labels"])


def test_the_configmap_turns_the_fhir_server_allowlist_on(manifests):
    data = manifests["ConfigMap"]["data"]
    servers = json.loads(data["CDS_FHIR_SERVERS"])
    assert servers and all(urlsplit(url).scheme == "https" for url in servers)
    assert data["CDS_SANDBOX"] == "false"
    assert data["CDS_LOG_FORMAT"] == "json"
    assert urlsplit(data["CDS_PUBLIC_BASE_URL"]).scheme == "https"


def test_the_secret_holds_placeholders_to_replace(manifests):
    secret = manifests["Secret"]
    values = secret["stringData"]
    assert set(values) == {"CDS_DATABASE_URL", "CDS_JWT_ISSUERS", "CDS_PATIENT_HASH_SECRET"}
    assert all("REPLACE-ME" in value for value in values.values())


def test_configmap_and_secret_are_a_valid_configuration(manifests):
    environ = {**manifests["ConfigMap"]["data"], **manifests["Secret"]["stringData"]}
    assert set(environ) <= KNOWN_VARIABLES
    assert all(isinstance(value, str) for value in environ.values())
    settings = load_settings(environ=environ)
    assert settings["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert settings["SANDBOX"] is False
    gunicorn_settings(environ)


def test_kustomize_applies_every_manifest_but_the_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml",
                                                           "secret.yaml"}


# -- Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def final_stage_user() -> str:
    return [args for keyword, args in final_stage() if keyword == "USER"][-1]


def test_the_image_is_built_in_stages():
    assert sum(keyword == "FROM" for keyword, _ in dockerfile_instructions()) >= 2


def test_base_images_are_pinned_and_never_latest():
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            image = arguments.split()[0]
            assert ":" in image and not image.endswith(":latest"), image


def test_the_final_stage_runs_as_a_non_root_user():
    user = final_stage_user().split(":")[0]
    assert user not in ("root", "0") and user.isdigit()


def test_the_final_stage_checks_health_at_healthz_without_curl():
    (check,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    assert "/healthz" in check and "python" in check and "curl" not in check


def test_the_exposed_port_is_the_served_and_probed_port(container):
    (exposed,) = [args for keyword, args in final_stage() if keyword == "EXPOSE"]
    environment = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    assert int(exposed) == container["ports"][0]["containerPort"]
    assert f"CDS_PORT={exposed}" in environment


def test_the_final_stage_listens_on_all_interfaces_without_the_sandbox():
    environment = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    assert "CDS_HOST=0.0.0.0" in environment and "CDS_SANDBOX=false" in environment


def test_nothing_is_downloaded_by_add_and_pip_keeps_no_cache():
    for keyword, arguments in dockerfile_instructions():
        assert not (keyword == "ADD" and re.search(r"https?://", arguments))
        if keyword == "RUN" and re.search(r"pip (install|wheel)", arguments):
            assert "--no-cache-dir" in arguments, arguments


def test_the_entrypoint_is_gunicorn_with_the_shared_configuration():
    (command,) = [json.loads(args) for keyword, args in final_stage() if keyword == "CMD"]
    assert command[:2] == ["gunicorn", "-c"] and command[-1] == "cds_service:create_app()"
    copies = [args.split() for keyword, args in final_stage() if keyword == "COPY"]
    assert ["deploy/gunicorn.conf.py", command[2]] in copies


def test_the_postgres_extra_that_the_image_installs_exists():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "postgres" in project["optional-dependencies"]
    assert any("[postgres]" in args for keyword, args in dockerfile_instructions()
               if keyword == "RUN")


def test_what_the_build_copies_exists_and_is_not_ignored():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source not in ignored and source.split("/")[0] not in ignored


def test_dockerignore_leaves_out_history_screenshots_local_state_and_caches():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", "tests/screenshots", "instance", ".pytest_cache", ".ruff_cache",
            "**/__pycache__"} <= ignored


# -- gunicorn.conf.py and cds-service serve start the same server -------------------------


@pytest.fixture
def isolated_process_state(monkeypatch):
    """Both entrypoints configure logging and the excepthook; give them back afterwards."""
    root, service = logging.getLogger(), logging.getLogger("cds_service")
    handlers, levels = list(root.handlers), (root.level, service.level)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.delitem(sys.modules, "__config__", raising=False)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    service.setLevel(levels[1])


class ConfigFile(Application):
    """gunicorn reading a configuration file exactly as ``gunicorn -c FILE`` does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    def init(self, parser, opts, args):  # pragma: no cover - not called
        return None

    def load_config(self) -> None:
        self.load_config_from_file(str(self.path))

    def load(self):  # pragma: no cover - nothing is served
        raise AssertionError("not loaded")


def effective(cfg) -> dict:
    return {name: setting.get() for name, setting in cfg.settings.items()}


@pytest.mark.parametrize("environment", [
    {},
    {"CDS_HOST": "0.0.0.0", "CDS_PORT": "8181", "CDS_WORKERS": "3", "CDS_THREADS": "1",
     "CDS_TIMEOUT": "45", "CDS_GRACEFUL_TIMEOUT": "15", "CDS_KEEPALIVE": "75"},
], ids=["defaults", "all-set"])
def test_gunicorn_conf_and_cds_service_serve_give_gunicorn_the_same_settings(
        environment, monkeypatch, tmp_path, isolated_process_state):
    for name in [n for n in os.environ if n.startswith("CDS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'cds.sqlite'}")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    started = []
    monkeypatch.setattr(BaseApplication, "run", lambda self: started.append(self))
    result = CliRunner().invoke(serve, [])
    assert result.exit_code == 0, result.output
    from_serve = effective(started[0].cfg)

    from_file = effective(ConfigFile(DEPLOY / "gunicorn.conf.py").cfg)

    assert from_file == from_serve
    assert from_serve["workers"] == int(environment.get("CDS_WORKERS", 2))
