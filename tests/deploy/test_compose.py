"""compose.yaml against the Compose Specification's schema, and the start order, health checks
and settings it promises; its Prometheus and Grafana files as they are mounted."""

import json
import os
import re
import shutil
import subprocess
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from tests.deploy.artefacts import CONTAINER_TMP, DASHBOARD, DEPLOY, ROOT, compose, load_yaml

CONDUIT_SERVICES = ("migrate", "api", "worker")


def compose_schema() -> dict[str, Any]:
    # The copy check-jsonschema vendors, with its licence (a PyPI dependency, works offline).
    schema = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(schema.read_text())
    return loaded


def test_compose_file_validates_against_the_compose_specification() -> None:
    jsonschema.validate(compose(), compose_schema())


def test_the_schema_catches_a_misspelt_key() -> None:
    broken = compose()
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_docker_compose_accepts_it_when_the_plugin_is_installed() -> None:
    """`docker compose config` needs no engine, only the compose plugin, which no registry this
    project installs from provides: the schema test above is the check CI relies on."""
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], check=False, capture_output=True
        ).returncode
    ):
        pytest.skip("the Docker Compose plugin is not installed")
    environment = {"POSTGRES_PASSWORD": "x", "JWT_SECRET": "x", "GRAFANA_ADMIN_PASSWORD": "x"}
    subprocess.run(
        [docker, "compose", "--file", str(ROOT / "compose.yaml"), "config", "--quiet"],
        check=True,
        env={**os.environ, **environment},
    )


def test_services_start_in_order_and_wait_for_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test"), dependency
                assert not check.get("disable"), dependency
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_conduit_services_share_one_image_and_run_read_only_in_production_mode() -> None:
    services = compose()["services"]
    images = {services[name]["image"] for name in CONDUIT_SERVICES}
    assert len(images) == 1
    for name in CONDUIT_SERVICES:
        service = services[name]
        assert service["read_only"] is True
        assert service["tmpfs"] == [CONTAINER_TMP]
        environment = service["environment"]
        assert environment["ENVIRONMENT"] == "production"
        assert environment["MIGRATE_ON_START"] == "false"
        assert environment["SMTP_URL"] == "smtp://mailpit:1025"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:4318")
    # Stopping waits for the drain: SHUTDOWN_GRACE_SECONDS and WORKER_GRACE_SECONDS.
    api_grace = int(services["api"]["environment"]["SHUTDOWN_GRACE_SECONDS"])
    worker_grace = int(services["worker"]["environment"]["WORKER_GRACE_SECONDS"])
    assert int(services["api"]["stop_grace_period"].rstrip("s")) > api_grace
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > worker_grace


def test_every_image_is_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name


def test_secrets_come_from_an_uncommitted_env_file_documented_by_the_example() -> None:
    text = (ROOT / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"POSTGRES_PASSWORD", "JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?(\w+)=", example, flags=re.MULTILINE))
    assert set(re.findall(r"\$\{(\w+)", text)) <= documented
    for name in required:
        assert re.search(rf"^{name}=replace-me$", example, flags=re.MULTILINE), name
    ignored = subprocess.run(
        [shutil.which("git") or "git", "check-ignore", "--quiet", ".env"], cwd=ROOT, check=False
    ).returncode
    assert ignored == 0, ".env must be ignored by git"


def test_prometheus_scrapes_the_api_and_the_worker_where_they_listen() -> None:
    services = compose()["services"]
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets["conduit-api"] == ["api:8000"]
    port = services["worker"]["environment"]["WORKER_METRICS_PORT"]
    assert targets["conduit-worker"] == [f"worker:{port}"]
    assert config["rule_files"] == ["alerts.yml"]
    mounted = {volume.split(":")[1] for volume in services["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= mounted


def test_grafana_provisions_the_data_source_and_dashboard_that_compose_mounts() -> None:
    services = compose()["services"]
    volumes = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert volumes["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090"
    [provider] = load_yaml(provisioning / "dashboards" / "conduit.yml")["providers"]
    assert volumes["./deploy/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
