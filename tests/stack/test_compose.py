"""docker-compose.yml and the Dockerfile, checked without a Docker engine: schema, mounts, references, pins."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo_files import REPO, load_yaml

COMPOSE = load_yaml(REPO / "docker-compose.yml")
SERVICES = COMPOSE["services"]
LONG_RUNNING = {name for name, service in SERVICES.items() if service.get("restart") != "no"}


def test_compose_file_matches_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_services_are_all_there() -> None:
    assert {"prometheus", "pushgateway", "alertmanager", "grafana", "api", "postgres"} <= set(SERVICES)


def _mounts(service: dict) -> list[tuple[str, str]]:
    return [tuple(volume.split(":")[:2]) for volume in service.get("volumes", [])]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_bind_mount_is_a_repo_path_and_every_named_volume_is_declared(name: str) -> None:
    for source, _target in _mounts(SERVICES[name]):
        if source.startswith("."):
            assert (REPO / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_exist_and_wait_for_health_or_completion(name: str) -> None:
    for dependency, rule in SERVICES[name].get("depends_on", {}).items():
        assert dependency in SERVICES, f"{name} depends on undefined {dependency}"
        expected = "service_healthy" if dependency in LONG_RUNNING else "service_completed_successfully"
        assert rule["condition"] == expected


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_and_servers_have_healthchecks(name: str) -> None:
    image = SERVICES[name]["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?[\w.-]*", image), f"{name}: pin {image} to a version"
    if name in LONG_RUNNING:
        assert SERVICES[name]["healthcheck"]["test"], f"{name} has no healthcheck"


def test_prometheus_and_grafana_mount_what_their_configs_refer_to() -> None:
    prometheus = dict((target, source) for source, target in _mounts(SERVICES["prometheus"]))
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == "./prometheus/rules"  # rule_files: rules/*.yml
    grafana = dict((target, source) for source, target in _mounts(SERVICES["grafana"]))
    provider = load_yaml(REPO / "grafana/provisioning/dashboards/trainmon.yml")["providers"][0]
    assert grafana[provider["options"]["path"]] == "./grafana/dashboards"
    assert grafana["/etc/grafana/provisioning/datasources"] == "./grafana/provisioning/datasources"
    assert SERVICES["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GRAFANA_ADMIN_PASSWORD" in SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_alertmanager_runs_the_config_rendered_from_the_repo_template() -> None:
    renderer = SERVICES["alertmanager-config"]
    assert ("./alertmanager", "/config/alertmanager") in _mounts(renderer)
    out = renderer["command"][renderer["command"].index("--out") + 1]
    config_flag = next(arg for arg in SERVICES["alertmanager"]["command"] if arg.startswith("--config.file="))
    assert config_flag == f"--config.file={out}/alertmanager.yml"
    assert any(target == out for _source, target in _mounts(SERVICES["alertmanager"]))


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_dockerfile_runs_the_api_as_non_root_with_a_healthcheck() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.M)
    assert re.search(r"^FROM \S+:\d+\.\d+\.\d+", dockerfile, re.M), "pin the base image"
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), f"Dockerfile copies missing {path}"


def test_env_example_lists_every_variable_compose_interpolates() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    listed = set(re.findall(r"^(\w+)=", (REPO / ".env.example").read_text(), re.M))
    assert used - listed == set()


def test_dockerfile_copies_every_package_folder_of_the_distribution() -> None:
    """The image installs the distribution: every folder in [tool.setuptools] package-dir must be in it."""
    import tomllib

    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = {path for line in re.findall(r"^COPY (.+) \S+$", (REPO / "Dockerfile").read_text(), re.M)
              for path in line.split()}
    assert set(package_dirs.values()) <= copied, set(package_dirs.values()) - copied
