"""The commands the README and k8s/ document, read from their text, never copied into a test.

Tests run what these functions return, so an edit to the README or a manifest changes what the
tests run. The only changes allowed are the substitutions the README itself names (HEAD, TOKEN,
BUCKET, the S3 endpoint) and, for k8s/, the image: the test's image is this checkout.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
K8S = REPO / "k8s"
# The placeholders the README's cluster section names, and the endpoint its commands carry.
README_HEAD = "http://HEAD:8265"
README_TOKEN = "RAY_AUTH_TOKEN=TOKEN"
README_BUCKET = "BUCKET"
README_ENDPOINT = "https://s3.example.com"
IMAGE_APP_DIR = "/home/ray/app"  # docker/Dockerfile's WORKDIR, where the image holds this checkout
K8S_HEAD_SERVICE = "http://catalog-classifier-head-svc:8265"


def readme_section(title: str) -> str:
    """The text of one `## title` section of the README."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_blocks(section: str, language: str = "bash") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def readme_cluster_block() -> str:
    """The `ray job submit` block of "Run on a cluster", as written."""
    blocks = [block for block in code_blocks(readme_section("Run on a cluster")) if "ray job submit" in block]
    assert len(blocks) == 1, "expected one bash block with the ray job submit commands"
    return blocks[0]


def shell_commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def job_argv(command: str) -> list[str]:
    """`python -m jobs.X ...` out of a `ray job submit ... -- python -m jobs.X ...` command."""
    argv = shlex.split(command)
    return argv[argv.index("--") + 1 :] if "--" in argv else argv


def readme_usage() -> dict[str, set[str]]:
    """{job module: the flags its "Using it" synopsis offers}."""
    (block,) = code_blocks(readme_section("Using it"))
    usage: dict[str, set[str]] = {}
    for command in re.split(r"\n(?=python -m )", block.strip()):
        module = command.split()[2]
        usage[module] = set(re.findall(r"(--[a-z-]+)", command))
    return usage


@dataclass
class K8sCommand:
    """One documented cluster run out of the rendered manifests."""

    where: str
    kind: str
    entrypoint: str  # RayJob/RayCronJob: run by KubeRay's submitter; CronJob: the container's script
    runtime_env: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def render_k8s(workdir: Path, settings: dict[str, str]) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a copy of k8s/ with kustomization.yaml's settings replaced."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render k8s/ (apt-get install kubectl)"
    shutil.copytree(K8S, workdir)
    text = (workdir / "kustomization.yaml").read_text()
    for key, value in settings.items():
        text, count = re.subn(
            rf"^(\s*- {key}=).*$", lambda match, value=value: match.group(1) + value, text, flags=re.MULTILINE
        )
        assert count == 1, f"kustomization.yaml has no {key} setting"
    (workdir / "kustomization.yaml").write_text(text)
    rendered = subprocess.run(
        [kubectl, "kustomize", str(workdir)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def k8s_commands(docs: list[dict[str, Any]]) -> list[K8sCommand]:
    found = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "RayJob":
            spec = doc["spec"]
        elif kind == "RayCronJob":
            spec = doc["spec"]["jobTemplate"]
        elif kind == "CronJob":
            (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            argv = [*container.get("command", []), *container.get("args", [])]
            assert argv[:2] == ["/bin/bash", "-c"], f"{name}: expected a bash -c script"
            env = {item["name"]: item.get("value", "") for item in container.get("env", [])}
            found.append(K8sCommand(f"{kind}/{name}", kind, argv[2], env=env))
            continue
        else:
            continue
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
        found.append(K8sCommand(f"{kind}/{name}", kind, spec["entrypoint"], runtime_env=runtime_env))
    return found


def raw_k8s_entrypoints() -> list[tuple[str, list[str]]]:
    """(where, job argv) for every job command in k8s/ as committed (no rendering, no kubectl)."""
    docs = [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    found = []
    for command in k8s_commands(docs):
        found.append((command.where, job_argv(command.entrypoint)))
    return found


def readme_review_commands() -> list[str]:
    """The commands of the "Review loop" section's bash block, as written."""
    section = readme_section("Review loop: uncertain rows to people, their answers into training")
    (block,) = code_blocks(section)
    return shell_commands(block)
