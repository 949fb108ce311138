"""The kustomize overlays render, every object is valid for Kubernetes, and the objects hold the
operational promises deploy/README.md makes (probes, drain, rollouts, security, secrets)."""

import base64
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.artefacts import CONTAINER_TMP, OVERLAYS, base_object, find, render

KUBERNETES_VERSION = "1.33.0"
ISTIO_KINDS = {"VirtualService", "DestinationRule"}
PRE_STOP_SECONDS = 5
# Closing connections and flushing traces after the drain; an unreachable trace collector alone
# costs about 8 s of export retries (seen in test_image's logs).
AFTER_DRAIN_SECONDS = 10


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "conduit-config")["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schema(overlay: str) -> None:
    objects = render(overlay)
    assert objects
    for manifest in objects:
        if manifest["kind"] in ISTIO_KINDS:
            continue
        # Strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_fails_validation() -> None:
    deployment = find(render("prod"), "Deployment", "conduit-api")
    pod_spec(deployment)["terminationGracePeriod"] = 35
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_prod_renders_the_objects_of_a_deployment_and_no_secret() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render("prod")}
    assert kinds == {
        ("Namespace", "conduit"),
        ("ServiceAccount", "conduit"),
        ("ConfigMap", "conduit-config"),
        ("Service", "conduit-api"),
        ("Deployment", "conduit-api"),
        ("Deployment", "conduit-worker"),
        ("HorizontalPodAutoscaler", "conduit-api"),
        ("PodDisruptionBudget", "conduit-api"),
        ("PodDisruptionBudget", "conduit-worker"),
        ("Job", "conduit-migrate"),
    }
    prod = render("prod")
    assert find(prod, "Deployment", "conduit-api")["spec"]["replicas"] == 3
    assert find(prod, "HorizontalPodAutoscaler", "conduit-api")["spec"]["minReplicas"] == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_read_one_config_map_and_one_secret(overlay: str) -> None:
    objects = render(overlay)
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    for workload in [o for o in objects if o["kind"] in {"Deployment", "Job"}]:
        [container] = pod_spec(workload)["containers"]
        assert not container.get("env"), "settings belong in the ConfigMap or the Secret"
        refs = {
            kind: ref["name"] for source in container["envFrom"] for kind, ref in source.items()
        }
        assert refs["configMapRef"] == "conduit-config"
        secret = refs["secretRef"]
        if overlay == "dev":
            # Generated, with a hash suffix that the references follow.
            assert secret.startswith("conduit-secrets-")
            assert secret in secrets
        else:
            assert secret == "conduit-secrets"
    for secret in secrets.values():
        # Placeholders only, never a value someone could use.
        values = secret.get("data", {}) | secret.get("stringData", {})
        assert values
        for key, value in values.items():
            decoded = base64.b64decode(value).decode() if "data" in secret else value
            assert "replace-me" in decoded or key in {"REDIS_URL", "SMTP_URL"}, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_pods_probe_the_health_endpoints_and_drain_within_their_grace_period(
    overlay: str,
) -> None:
    objects = render(overlay)
    settings = config(objects)
    api = find(objects, "Deployment", "conduit-api")
    spec = pod_spec(api)
    [container] = spec["containers"]
    assert container["args"] == [
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104
        "--port",
        "8000",
        "--workers",
        "1",
    ]
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        # A dependency check that times out is the app's 503, not a probe timeout.
        assert container[probe]["timeoutSeconds"] > float(settings["HEALTH_CHECK_TIMEOUT_SECONDS"])
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_SECONDS)]
    drain = int(settings["SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] == PRE_STOP_SECONDS + drain + AFTER_DRAIN_SECONDS
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert {"requests", "limits"} <= set(container["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_pods_are_probed_on_their_metrics_port_and_finish_jobs_before_the_kill(
    overlay: str,
) -> None:
    objects = render(overlay)
    settings = config(objects)
    worker = find(objects, "Deployment", "conduit-worker")
    spec = pod_spec(worker)
    [container] = spec["containers"]
    assert container["args"] == ["worker"]
    [port] = container["ports"]
    assert port["containerPort"] == int(settings["WORKER_METRICS_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": port["name"]}
    assert spec["terminationGracePeriodSeconds"] >= float(settings["WORKER_GRACE_SECONDS"]) + 5
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert {"requests", "limits"} <= set(container["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_non_root_on_a_read_only_root_with_tmp_writable(overlay: str) -> None:
    objects = render(overlay)
    for workload in [o for o in objects if o["kind"] in {"Deployment", "Job"}]:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        [container] = spec["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        [mount] = container["volumeMounts"]
        assert mount["mountPath"] == CONTAINER_TMP
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mount["name"]]
        # The app's data folder, should anything be written there, is on the writable volume.
        assert config(objects)["DATA_DIR"].startswith(f"{CONTAINER_TMP}/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_hpa_and_budgets_select_the_pods_they_mean(overlay: str) -> None:
    objects = render(overlay)
    api = find(objects, "Deployment", "conduit-api")
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "conduit-api")
    assert service["spec"]["selector"].items() <= api_labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    hpa = find(objects, "HorizontalPodAutoscaler", "conduit-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "conduit-api",
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] <= api["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    for name in ("conduit-api", "conduit-worker"):
        pods = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        budget = find(objects, "PodDisruptionBudget", name)
        assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_runs_the_image_upgrade_before_the_rollout(overlay: str) -> None:
    objects = render(overlay)
    job = find(objects, "Job", "conduit-migrate")
    [container] = pod_spec(job)["containers"]
    assert container["args"] == ["db", "upgrade"]
    api_image = pod_spec(find(objects, "Deployment", "conduit-api"))["containers"][0]["image"]
    assert container["image"] == api_image
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The API must not migrate on start: several pods would race, and the Job does it.
    assert config(objects)["MIGRATE_ON_START"] == "false"


def test_istio_retries_only_idempotent_routes_and_times_out_every_route() -> None:
    objects = render("istio")
    service = find(objects, "Service", "conduit-api")
    host = f"conduit-api.{service['metadata']['namespace']}.svc.cluster.local"
    virtual_service = find(objects, "VirtualService", "conduit-api")
    assert virtual_service["spec"]["hosts"] == [host]
    routes = virtual_service["spec"]["http"]
    for route in routes:
        assert "timeout" in route, route["name"]
        [destination] = route["route"]
        assert destination["destination"]["host"] == host
        assert destination["destination"]["port"]["number"] == service["spec"]["ports"][0]["port"]
        methods = {
            value for match in route.get("match", []) for value in match.get("method", {}).values()
        }
        if route["retries"]["attempts"] > 0:
            assert methods, f"{route['name']} retries requests of any method"
            assert methods <= {"GET", "HEAD"}, route["name"]
            assert "5xx" not in route["retries"]["retryOn"].split(",")
    # The catch-all route (the writes) comes last and never retries.
    assert "match" not in routes[-1]
    assert routes[-1]["retries"] == {"attempts": 0}
    stream = next(r for r in routes if r["name"] == "notification-stream")
    assert stream["timeout"] == "0s"

    rule = find(objects, "DestinationRule", "conduit-api")
    assert rule["spec"]["host"] == host
    policy = rule["spec"]["trafficPolicy"]
    assert {"tcp", "http"} <= set(policy["connectionPool"])
    assert policy["outlierDetection"]["maxEjectionPercent"] < 50
    migrate = find(objects, "Job", "conduit-migrate")
    assert migrate["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_base_files_agree_with_the_rendered_api() -> None:
    """The runtime tests read the base without kustomize; the overlays must not change what
    they rely on."""
    rendered = pod_spec(find(render("prod"), "Deployment", "conduit-api"))
    base = pod_spec(base_object("api.yaml", "Deployment"))
    assert rendered["terminationGracePeriodSeconds"] == base["terminationGracePeriodSeconds"]
    assert rendered["containers"][0]["args"] == base["containers"][0]["args"]
