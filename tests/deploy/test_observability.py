"""The alert rules and the dashboard: they parse, each alert is proven to fire on what it names
(promtool's rule tests), and every metric they read is one that a running Conduit exposes."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_JWT_SECRET
from tests.deploy.artefacts import (
    ALERT_RULES,
    ALERT_TESTS,
    alert_rules,
    dashboard_targets,
    load_yaml,
    promtool,
)
from tests.platform.server import free_port, serving, start, wait_until_answered

# Series Prometheus itself adds to every scrape, not exposed by the target.
SCRAPE_SERIES = {"up"}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
# Grafana's variables, replaced by what Grafana would put there, so the query parses as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expression: str) -> set[str]:
    """Every metric name a PromQL expression selects."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"select metrics by name, not only by labels: {expression}"
            names.add(node.name)
            return
        if isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
            return
        for attribute in ("expr", "lhs", "rhs", "param"):
            child = getattr(node, attribute, None)
            if child is not None:
                walk(child)
        for argument in getattr(node, "args", None) or []:
            walk(argument)

    walk(promql_parser.parse(expression))
    return names


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every alert rule and dashboard query."""
    for rule in alert_rules():
        yield f"alert {rule['alert']}", rule["expr"]
    for title, expression in dashboard_targets():
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        yield f"panel {title!r}", expression


def exposed_names(text: str) -> set[str]:
    """The sample names a /metrics answer can carry, its metric families included even when
    they have no samples yet (a labelled counter before its first increment)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(f"{family.name}{suffix}" for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def unknown_names(exposed: set[str]) -> dict[str, set[str]]:
    missing = {}
    for where, expression in queries():
        unknown = metric_names(expression) - exposed - SCRAPE_SERIES
        if unknown:
            missing[where] = unknown
    return missing


@pytest.fixture(scope="module")
def exposed(
    server_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> set[str]:
    """What /metrics of a running API and of a running `conduit worker` expose, after a little
    traffic."""
    folder = tmp_path_factory.mktemp("metrics")
    settings = {"REDIS_URL": redis_server_url, "JWT_SECRET": TEST_JWT_SECRET}
    with serving(server_url, folder, env=settings) as api:
        httpx.get(f"{api.url}/api/tags").raise_for_status()
        httpx.get(f"{api.url}/api/articles").raise_for_status()
        api_metrics = httpx.get(f"{api.url}/metrics").text
        port = free_port()
        worker = start(
            [sys.executable, "-m", "conduit", "worker"],
            port,
            folder / "worker.log",
            {
                **os.environ,
                **settings,
                "DATABASE_URL": api.database_url,
                "DATA_DIR": str(folder),
                "WORKER_METRICS_PORT": str(port),
            },
        )
        try:
            wait_until_answered(worker, "/metrics")
            worker_metrics = httpx.get(f"{worker.url}/metrics").text
        finally:
            worker.stop()
    return exposed_names(api_metrics) | exposed_names(worker_metrics)


def test_alerts_and_dashboard_read_only_metrics_that_conduit_exposes(exposed: set[str]) -> None:
    assert "http_request_duration_seconds_bucket" in exposed
    assert "conduit_job_oldest_ready_age_seconds" in exposed
    assert unknown_names(exposed) == {}


def test_a_metric_conduit_does_not_expose_is_reported(exposed: set[str]) -> None:
    renamed = {name.replace("conduit_job_queue_depth", "conduit_queue_depth") for name in exposed}
    missing = unknown_names(renamed)
    assert missing["alert ConduitDeadLetters"] == {"conduit_job_queue_depth"}
    assert any(where.startswith("panel ") for where in missing)


def test_metric_names_are_found_in_every_part_of_an_expression() -> None:
    expression = (
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / on() group_left()"
        " (max_over_time(b[10m:1m]) or -c) > bool scalar(d)"
    )
    assert metric_names(expression) == {"a_bucket", "b", "c", "d"}


def test_every_rule_has_a_window_a_severity_and_a_runbook() -> None:
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        assert "\n" not in annotations["runbook"].strip(), "a runbook is one line"


def test_the_golden_signals_each_have_an_alert() -> None:
    read = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert {
        "http_request_errors_total",  # errors
        "http_request_duration_seconds_bucket",  # latency
        "conduit_db_pool_checked_out",  # saturation
        "conduit_job_oldest_ready_age_seconds",  # queue age
        "conduit_job_queue_depth",  # dead letters
        "up",  # no traffic served at all
    } <= read


def test_each_alert_has_a_rule_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    cases = [case for test in load_yaml(ALERT_TESTS)["tests"] for case in test["alert_rule_test"]]
    names = {rule["alert"] for rule in alert_rules()}
    assert {case["alertname"] for case in cases if case.get("exp_alerts")} == names
    assert {case["alertname"] for case in cases if not case.get("exp_alerts")} == names


def test_alert_rules_pass_promtool_check() -> None:
    subprocess.run([promtool(), "check", "rules", str(ALERT_RULES)], check=True)


def test_each_alert_fires_on_the_condition_it_names() -> None:
    """promtool evaluates the rules over recorded series (alerts.test.yml) and compares the
    alerts that fire, with their labels and annotations, at each time given."""
    result = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_passes_promtool_check() -> None:
    config = Path(ALERT_RULES.parent / "prometheus.yml")
    subprocess.run([promtool(), "check", "config", config.name], cwd=config.parent, check=True)
