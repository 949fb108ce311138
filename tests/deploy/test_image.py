"""The image: what the Dockerfile builds, and its command lines run for real outside a
container, with the image's environment and the Kubernetes ConfigMap, against the test
PostgreSQL and Redis: migration, API, worker, health checks and SIGTERM within the grace period.
"""

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, drop_database, recreate_database
from tests.deploy.artefacts import VENV_BIN, base_object, compose, dockerfile_stages
from tests.platform.server import Server, free_port, start, wait_until_answered
from tests.platform.test_shutdown import BODY, start_slow_request

IMAGE_PORT = "8000"
BUILD_TOOLS = ("gcc", "build-essential", "make", "uv ", "/uv", "apt-get install", "pip install")


def runtime() -> tuple[list[str], dict[str, str]]:
    """The final stage's ENTRYPOINT + CMD and its environment (PATH aside)."""
    final = dockerfile_stages()[-1]
    environment = {k: v for k, v in final.environment().items() if k != "PATH"}
    return final.exec_form("ENTRYPOINT") + final.exec_form("CMD"), environment


def test_the_image_is_a_slim_non_root_multi_stage_build_from_the_lock_file() -> None:
    stages = dockerfile_stages()
    *builders, final = stages
    assert builders, "dependencies are built in a stage of their own"
    build_steps = " ".join(arguments for stage in builders for _, arguments in stage.instructions)
    assert "uv sync --locked --no-dev" in build_steps
    assert final.base == "${PYTHON_IMAGE}"
    assert (
        "slim" in (Path(__file__).parents[2] / "Dockerfile").read_text().split("PYTHON_IMAGE=")[1]
    )
    final_steps = " ".join(arguments for _, arguments in final.instructions)
    for build_tool in BUILD_TOOLS:
        assert build_tool not in final_steps, build_tool
    user = final.last("USER").split(":")[0]
    assert user.isdigit(), "a numeric user, so that runAsNonRoot can check it"
    assert int(user) != 0
    assert user == str(
        base_object("api.yaml", "Deployment")["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ]
    )
    flags, check = final.healthcheck()
    assert f"http://127.0.0.1:{IMAGE_PORT}/health/live" in " ".join(check)
    assert set(flags) >= {"interval", "timeout", "start-period", "retries"}
    assert final.exec_form("ENTRYPOINT") == ["conduit"]


def test_compose_and_kubernetes_run_the_image_commands() -> None:
    command, _ = runtime()
    services = compose()["services"]
    assert ["conduit", *services["api"]["command"]] == command
    api = base_object("api.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert ["conduit", *api["args"]] == command
    worker = base_object("worker.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == services["worker"]["command"] == ["worker"]
    job = base_object("migrate-job.yaml", "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == services["migrate"]["command"] == ["db", "upgrade"]


def _on_port(command: list[str], port: int) -> list[str]:
    """The image's command line, with the port it listens on changed to a free one."""
    assert command[command.index("--port") + 1] == IMAGE_PORT
    return [
        str(port) if i and command[i - 1] == "--port" else part for i, part in enumerate(command)
    ]


def _conduit(command: list[str]) -> list[str]:
    """ENTRYPOINT `conduit` is the console script this environment installed."""
    assert command[0] == "conduit"
    return [str(VENV_BIN / "conduit"), *command[1:]]


def _stop(server: Server) -> tuple[int, float]:
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=120)
    return code, time.monotonic() - signalled


def test_the_image_commands_migrate_serve_work_and_stop_within_their_grace_periods(
    server_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    command, image_environment = runtime()
    config = base_object("configmap.yaml", "ConfigMap")["data"]
    api_pod = base_object("api.yaml", "Deployment")["spec"]["template"]["spec"]
    worker_pod = base_object("worker.yaml", "Deployment")["spec"]["template"]["spec"]
    pre_stop = int(api_pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    # As on a read-only root: a working directory that must stay empty, no data folder.
    workdir = tmp_path / "app"
    workdir.mkdir()
    data_dir = tmp_path / "data"
    name = f"conduit_image_{os.getpid()}"
    database_url = asyncio.run(recreate_database(server_url, name))
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))},
        **image_environment,
        **config,
        "DATA_DIR": str(data_dir),
        # The Secret's keys.
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "REDIS_URL": redis_server_url,
        "SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
        # Nothing listens there: spans are dropped, which must not hold up a shutdown.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }
    assert environment["ENVIRONMENT"] == "production"
    assert environment["MIGRATE_ON_START"] == "false"
    api_port = free_port()
    api = start(
        _on_port(_conduit(command), api_port), api_port, tmp_path / "api.log", environment, workdir
    )
    worker = None
    try:
        # Started before the migration, the API lives but its startup probe holds it back.
        wait_until_answered(api, "/health/live")
        assert httpx.get(f"{api.url}/health/startup").status_code == 503

        migrate = subprocess.run(
            _conduit(["conduit", "db", "upgrade"]),
            env=environment,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr
        wait_until_answered(api, "/health/startup")
        wait_until_answered(api, "/health/ready")

        _, check = dockerfile_stages()[-1].healthcheck()
        check = [part.replace(f":{IMAGE_PORT}/", f":{api_port}/") for part in check]
        assert check[0] == "python"
        healthy = subprocess.run([str(VENV_BIN / "python"), *check[1:]], check=False, timeout=10)
        assert healthy.returncode == 0

        worker_port = free_port()
        worker = start(
            _conduit(["conduit", *worker_pod["containers"][0]["args"]]),
            worker_port,
            tmp_path / "worker.log",
            {**environment, "WORKER_METRICS_PORT": str(worker_port)},
            workdir,
        )
        wait_until_answered(worker, worker_pod["containers"][0]["livenessProbe"]["httpGet"]["path"])

        # SIGTERM with a request in flight, as after the preStop delay: it is answered, then the
        # process exits, well within what is left of terminationGracePeriodSeconds.
        connection = start_slow_request(api)
        api.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(1)
        assert api.process.poll() is None, "exited with a request in flight"
        connection.sendall(BODY[10:])
        assert connection.recv(4096).startswith(b"HTTP/1.1 401 ")
        connection.close()
        assert api.process.wait(timeout=60) == 0
        assert time.monotonic() - signalled < api_pod["terminationGracePeriodSeconds"] - pre_stop

        code, waited = _stop(worker)
        assert code == 0, worker.log.read_text()
        assert waited < worker_pod["terminationGracePeriodSeconds"]
    finally:
        for process in (api, worker):
            if process is not None and process.process.poll() is None:
                process.process.kill()
                process.process.wait()
        asyncio.run(drop_database(server_url, name))
    assert not data_dir.exists(), "the app wrote to DATA_DIR"
    assert list(workdir.iterdir()) == [], "the app wrote to its working directory"


@pytest.mark.parametrize("service", ["api", "worker"])
def test_compose_health_checks_run_with_the_image_python(service: str) -> None:
    check = compose()["services"][service]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"]
    compile(check[3], f"{service} health check", "exec")
