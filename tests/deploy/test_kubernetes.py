"""deploy/kubernetes/, offline: what `kubectl apply -k deploy/kubernetes` would send, checked without a cluster.

- the generated files (PrometheusRules, dashboard ConfigMaps, Alertmanager config) match their sources
  (deploy/render_kubernetes.py --check);
- `kubectl kustomize` renders the kustomization (kubectl from Debian's kubernetes-client, which `make test`
  installs; its kustomize is the oldest one the kustomization must work with);
- the core objects, and the trainer Job example, validate against the Kubernetes OpenAPI schemas that the
  `kubernetes-validate` package ships (strict: no unknown fields); the prometheus-operator objects are checked
  field by field;
- the rule groups inside the PrometheusRules pass `promtool check rules` and every promtool rule test of
  prometheus/tests/, run against them; the Alertmanager config in the Secret passes `amtool check-config`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import kubernetes_validate
import pytest
import yaml
from support.procs import require_binary

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
RULES = REPO / "prometheus" / "rules"
RULE_TESTS = REPO / "prometheus" / "tests"
DASHBOARDS = REPO / "grafana" / "dashboards"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CORE_KINDS = {"Namespace", "Deployment", "Service", "PersistentVolumeClaim", "ConfigMap", "Secret", "Job"}


def renderer() -> ModuleType:
    path = REPO / "deploy" / "render_kubernetes.py"
    spec = importlib.util.spec_from_file_location("trainmon_render_kubernetes", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = require_binary("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def objects(rendered: list[dict], kind: str) -> list[dict]:
    return [document for document in rendered if document["kind"] == kind]


def one(rendered: list[dict], kind: str, name: str) -> dict:
    [found] = [document for document in objects(rendered, kind) if document["metadata"]["name"] == name]
    return found


def example_documents() -> list[dict]:
    return [document for document in yaml.safe_load_all((KUBERNETES / "examples" / "trainer-job.yaml").read_text())
            if document]


def test_generated_files_match_their_sources() -> None:
    stale = renderer().stale()
    assert not stale, f"run `make kubernetes`: {[str(path.relative_to(REPO)) for path in stale]}"


def test_the_kustomization_renders_everything_in_one_namespace(rendered: list[dict]) -> None:
    kinds = sorted(document["kind"] for document in rendered)
    assert kinds == sorted(["Namespace", "Deployment", "Service", "PersistentVolumeClaim", "ServiceMonitor",
                            "PodMonitor", "Secret", *["PrometheusRule"] * len(list(RULES.glob("*.yml"))),
                            *["ConfigMap"] * len(list(DASHBOARDS.glob("*.json")))])
    namespaced = [document for document in rendered if document["kind"] != "Namespace"]
    assert {document["metadata"].get("namespace") for document in namespaced} == {"trainmon"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(rendered: list[dict], version: str) -> None:
    checked = []
    for document in [*rendered, *example_documents()]:
        if document["kind"] in CORE_KINDS:
            kubernetes_validate.validate(document, version, strict=True)
            checked.append(document["kind"])
    assert {"Deployment", "Service", "Job", "Secret", "ConfigMap"} <= set(checked)


def test_the_api_deployment(rendered: list[dict]) -> None:
    deployment = one(rendered, "Deployment", "trainmon-api")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= set(container["resources"])
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "trainmon-api-db", "key": "database-url"}
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"]  # probes and scrapes send the pod address as Host
    assert list(env).index("POD_IP") < list(env).index("ALLOWED_HOSTS")  # $(VAR) needs VAR defined before
    service = one(rendered, "Service", "trainmon-api")
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [endpoint] = one(rendered, "ServiceMonitor", "trainmon-api")["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def test_the_pod_monitor_scrapes_the_example_trainer(rendered: list[dict]) -> None:
    spec = one(rendered, "PodMonitor", "trainmon-trainers")["spec"]
    [endpoint] = spec["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
    assert {"targetLabel": "job", "replacement": "trainmon-trainers"} in endpoint["relabelings"]
    [job] = [document for document in example_documents() if document["kind"] == "Job"]
    template = job["spec"]["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    [container] = template["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {variable["name"]: variable for variable in container["env"]}
    assert ports[endpoint["port"]] == int(env["TRAINMON_PORT"]["value"])
    assert env["TRAINMON_HOST"]["value"] == "0.0.0.0"
    assert env["TRAINMON_API_URL"]["value"].startswith("http://trainmon-api.trainmon.svc:")
    assert env["TRAINMON_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    sources = {tuple(relabel.get("sourceLabels", [])): relabel["targetLabel"] for relabel in endpoint["relabelings"]}
    assert sources[("__meta_kubernetes_pod_label_job_name",)] == "run_id"  # the same run id on `up`


def test_dashboards_are_config_maps_for_the_grafana_sidecar(rendered: list[dict]) -> None:
    maps = objects(rendered, "ConfigMap")
    shipped = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert len(json.dumps(config_map)) < 262144  # fits `kubectl apply`'s last-applied annotation
        shipped.update(config_map["data"])
    assert {name: json.loads(text) for name, text in shipped.items()} == {
        path.name: json.loads(path.read_text()) for path in DASHBOARDS.glob("*.json")}


def test_prometheus_rules_are_the_repositorys_rules_and_pass_promtool(rendered: list[dict], tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (tmp_path / "rules").mkdir()
    for rule in objects(rendered, "PrometheusRule"):
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        source = REPO / rule["metadata"]["annotations"]["trainmon.io/source"]
        assert rule["spec"]["groups"] == yaml.safe_load(source.read_text())["groups"]
        (tmp_path / "rules" / source.name).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert sorted(path.name for path in (tmp_path / "rules").iterdir()) == sorted(p.name for p in RULES.glob("*.yml"))
    shutil.copytree(RULE_TESTS, tmp_path / "tests")  # their rule_files are ../rules/<file>
    files = sorted(str(path) for path in (tmp_path / "rules").glob("*.yml"))
    result = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = sorted(path.name for path in (tmp_path / "tests").glob("*_test.yml"))
    result = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alertmanager_secret_holds_a_valid_config(rendered: list[dict], tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    secret = one(rendered, "Secret", "alertmanager-trainmon")
    files = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    assert set(files) == {"alertmanager.yaml", "trainmon.tmpl"}
    config = yaml.safe_load(files["alertmanager.yaml"])
    assert config["templates"] == ["/etc/alertmanager/config/*.tmpl"]  # where the operator mounts the Secret
    slack = [integration for receiver in config["receivers"] for integration in receiver.get("slack_configs", [])]
    assert slack and all(integration["api_url_file"].startswith("/etc/alertmanager/secrets/") for integration in slack)
    assert "hooks.slack.com" not in files["alertmanager.yaml"]
    config["templates"] = [str(tmp_path / "*.tmpl")]  # amtool reads them from here
    (tmp_path / "trainmon.tmpl").write_text(files["trainmon.tmpl"])
    (tmp_path / "alertmanager.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yaml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_renderer_refuses_a_secret_in_the_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = renderer()
    env_file = tmp_path / "alertmanager.env"
    env_file.write_text("ENABLE_NOTIFICATIONS=true\nSLACK_WEBHOOK_URL=https://hooks.slack.com/services/T/B/x\n")
    monkeypatch.setattr(module, "ALERTMANAGER_ENV", env_file)
    with pytest.raises(ValueError, match="SLACK_WEBHOOK_URL"):
        module.alertmanager_files()
