"""Offline checks of k8s/ and docker/Dockerfile: strict schema validation and the deployment rules no schema sees.

Ray kinds are validated against the KubeRay CRDs (`KUBERAY_CRDS_DIR`, default `../shared/kuberay-crds`),
made strict the way the API server treats structural schemas; built-in kinds against
kubernetes-validate's strict schemas. Deliberately broken copies prove both validators can fail.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from jobs.config import load_config, read_preset
from tests.conftest import skip_or_fail

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
KUSTOMIZATION_PATH = K8S_DIR / "kustomization.yaml"
DOCKERFILE_PATH = REPO_ROOT / "docker" / "Dockerfile"
PYPROJECT_PATH = REPO_ROOT / "pyproject.toml"
CRDS_DIR = Path(os.environ.get("KUBERAY_CRDS_DIR", REPO_ROOT.parent / "shared" / "kuberay-crds"))

# The Kubernetes release the built-in kinds are checked against; any cluster that new takes the manifests.
KUBERNETES_VERSION = "1.33"
GPU_RESOURCE = "nvidia.com/gpu"
RAY_UID = 1000
SETTINGS_CONFIGMAP = "catalog-classifier-settings"
EXPECTED_MANIFESTS = {
    "raycluster.yaml",
    "rayjob-train.yaml",
    "rayjob-score.yaml",
    "rayjob-score-gpu.yaml",
    "raycronjob-score.yaml",
    "cronjob-score.yaml",
}
DEPLOY_LABEL = "catalog-classifier/deploy"
DEPLOY_ROLES = {"service", "raycronjob", "train", "score", "score-gpu"}
JOB_MODULES = {"jobs.train", "jobs.score"}
CREDENTIAL_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
# Comments count too: a `kubectl create secret` example with a real key in it leaks as surely as a value.
# Matches `NAME=value` anywhere and `NAME: value` as a YAML key (Secret data, stringData).
CREDENTIAL_ASSIGNMENT = re.compile(
    r"(?:\b(?:AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|auth_token)=|"
    r"^[ \t#-]*(?:AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|auth_token):[ \t]*)(\S+)",
    re.MULTILINE,
)
CREDENTIAL_PLACEHOLDERS = re.compile(r'^(\.\.\.|<[^>]*>|"?\$\(.*)$')
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CRON_FIELD = r"[\d*/,\-]+"
CRON_SCHEDULE = re.compile(rf"^{CRON_FIELD}( {CRON_FIELD}){{4}}$")


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=yaml.CSafeLoader) if doc is not None]


def manifest_paths() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path != KUSTOMIZATION_PATH)


def document_id(path: Path, doc: dict[str, Any]) -> str:
    return f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


DOCUMENTS = [(document_id(path, doc), doc) for path in manifest_paths() for doc in load_documents(path)]
DOCUMENT_IDS = [doc_id for doc_id, _ in DOCUMENTS]


def documents_of(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc.get("kind") == kind]


@functools.cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION_PATH.read_text())


def settings() -> dict[str, str]:
    for generator in kustomization().get("configMapGenerator", []):
        if generator["name"] == SETTINGS_CONFIGMAP:
            return dict(literal.split("=", 1) for literal in generator.get("literals", []))
    raise AssertionError(f"kustomization.yaml has no configMapGenerator named {SETTINGS_CONFIGMAP}")


# --- walking manifests ---------------------------------------------------------------------------


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path) or "<root>"


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Found by shape rather than by path, so a pod template added anywhere later is checked too."""
    for path, node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("containers"), list):
            yield dotted(path), node


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, spec in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for container in spec.get(field, []):
                yield f"{where}.{field}[{container.get('name')}]", container


def ray_cluster_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = doc.get("spec", {})
    if doc.get("kind") == "RayCluster":
        return [("spec", spec)]
    if doc.get("kind") == "RayJob" and "rayClusterSpec" in spec:
        return [("spec.rayClusterSpec", spec["rayClusterSpec"])]
    if doc.get("kind") == "RayCronJob" and "rayClusterSpec" in spec.get("jobTemplate", {}):
        return [("spec.jobTemplate.rayClusterSpec", spec["jobTemplate"]["rayClusterSpec"])]
    return []


def ray_job_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if doc.get("kind") == "RayJob":
        return [("spec", doc["spec"])]
    if doc.get("kind") == "RayCronJob":
        return [("spec.jobTemplate", doc["spec"]["jobTemplate"])]
    return []


def ray_groups(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", cluster_spec["headGroupSpec"]
    for group in cluster_spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def gpus_requested(pod_spec: dict[str, Any]) -> int:
    limits = (container.get("resources", {}).get("limits", {}) for container in pod_spec["containers"])
    return sum(int(limit.get(GPU_RESOURCE, 0)) for limit in limits)


def tolerates_gpu(pod_spec: dict[str, Any]) -> bool:
    return any(toleration.get("key") == GPU_RESOURCE for toleration in pod_spec.get("tolerations", []))


# --- strict CRD schemas ----------------------------------------------------------------------------


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Makes JSON Schema reject unknown fields, as the API server does for a structural CRD schema.

    JSON Schema allows any property it does not list; Kubernetes drops or rejects it unless the schema
    says `x-kubernetes-preserve-unknown-fields: true` or gives `additionalProperties`. Without this a
    misspelt field would pass here and be silently ignored by the cluster.
    """
    strict = dict(schema)
    if isinstance(strict.get("properties"), dict):
        strict["properties"] = {name: strict_schema(sub) for name, sub in strict["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(strict.get(key), dict):
            strict[key] = strict_schema(strict[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(strict.get(key), list):
            strict[key] = [strict_schema(sub) for sub in strict[key]]
    if strict.get("x-kubernetes-int-or-string") is True:
        strict.pop("type", None)
        strict.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if strict.get("nullable") is True and isinstance(strict.get("type"), str):
        strict["type"] = [strict["type"], "null"]
    if strict.get("x-kubernetes-embedded-resource") is True:
        strict.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            strict["properties"].setdefault(field, {"type": "string"})
        strict["properties"].setdefault("metadata", {"type": "object"})
    preserves_unknown = strict.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in strict and "additionalProperties" not in strict and not preserves_unknown:
        strict["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    if not CRDS_DIR.is_dir():
        skip_or_fail(f"KubeRay CRDs not found at {CRDS_DIR}; set KUBERAY_CRDS_DIR to the folder of the CRD files")
    validators = {}
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        for crd in load_documents(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft202012Validator(schema)
    if not validators:
        skip_or_fail(f"no CustomResourceDefinition in {CRDS_DIR}")
    return validators


def schema_errors(doc: dict[str, Any], request: pytest.FixtureRequest) -> list[str]:
    """Asks for the CRDs only for Ray kinds, so built-in kinds are still checked when the CRDs are absent."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api_version.startswith("ray.io/"):
        validators = request.getfixturevalue("crd_validators")
        validator = validators.get((api_version, kind))
        if validator is None:
            return [f"no CRD in {CRDS_DIR} defines {kind} {api_version}"]
        errors = [f"{dotted(tuple(error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc)]
        name = doc.get("metadata", {}).get("name", "")
        if not DNS_1123_LABEL.match(name) or len(name) > 63:
            errors.append(f"metadata.name: {name!r} is not a DNS-1123 label (KubeRay names Services after it)")
        return errors
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{dotted(tuple(error.absolute_path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [str(error)]
    return []


# --- schema validation, and proof that it can fail --------------------------------------------------


def test_manifests_exist_and_are_all_deployed_by_kustomize() -> None:
    names = {path.name for path in manifest_paths()}
    assert EXPECTED_MANIFESTS <= names
    assert set(kustomization()["resources"]) == names, "kustomization.yaml must list every manifest, and only those"


@pytest.mark.parametrize("doc", [doc for _, doc in DOCUMENTS], ids=DOCUMENT_IDS)
def test_manifest_matches_schema(doc: dict[str, Any], request: pytest.FixtureRequest) -> None:
    assert schema_errors(doc, request) == []


# Realistic mistakes: a value of the wrong type, and fields the API server would reject or drop.
BREAKAGES: dict[str, list[tuple[str, tuple[Any, ...], Any]]] = {
    "RayCluster": [
        ("replicas as a word", ("spec", "workerGroupSpecs", 0, "replicas"), "two"),
        ("misspelt spec field", ("spec", "enableInTreeAutoscaler"), True),
        ("misspelt container field", ("spec", "headGroupSpec", "template", "spec", "containers", 0, "resource"), {}),
    ],
    "RayJob": [
        ("boolean as a word", ("spec", "shutdownAfterJobFinishes"), "yes"),
        ("misspelt spec field", ("spec", "ttlSecondAfterFinished"), 900),
        (
            "misspelt worker field",
            ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resource"),
            {},
        ),
    ],
    "RayCronJob": [
        ("boolean as a word", ("spec", "jobTemplate", "shutdownAfterJobFinishes"), "yes"),
        ("CronJob field on a RayCronJob", ("spec", "concurrencyPolicy"), "Forbid"),
        (
            "misspelt head field",
            ("spec", "jobTemplate", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0, "resource"),
            {},
        ),
    ],
    "CronJob": [
        ("history limit as a word", ("spec", "successfulJobsHistoryLimit"), "three"),
        ("RayJob field on a CronJob", ("spec", "shutdownAfterJobFinishes"), True),
        (
            "misspelt container field",
            ("spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "resource"),
            {},
        ),
    ],
}
BROKEN_CASES = [
    pytest.param(doc, path, value, id=f"{doc_id}-{description}")
    for doc_id, doc in DOCUMENTS
    for description, path, value in BREAKAGES.get(doc.get("kind", ""), [])
]


def test_every_kind_has_breakages() -> None:
    assert {doc.get("kind") for _, doc in DOCUMENTS} <= BREAKAGES.keys()


@pytest.mark.parametrize(("doc", "path", "value"), BROKEN_CASES)
def test_broken_copy_fails_schema(
    doc: dict[str, Any], path: tuple[Any, ...], value: Any, request: pytest.FixtureRequest
) -> None:
    broken = copy.deepcopy(doc)
    parent = broken
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    errors = schema_errors(broken, request)
    assert errors, f"setting {dotted(path)} = {value!r} passed validation"
    assert str(path[-1]) in "\n".join(errors), f"failed for another reason: {errors}"


# --- versions and images --------------------------------------------------------------------------


def pinned_ray_version() -> str:
    if not PYPROJECT_PATH.is_file():
        pytest.fail(f"{PYPROJECT_PATH} is missing; it pins the Ray version the image must carry")
    for line in tomllib.loads(PYPROJECT_PATH.read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == "ray":
            pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            assert len(pins) == 1, f"ray must be pinned with == in pyproject.toml, got {line!r}"
            return pins[0]
    pytest.fail("pyproject.toml [project].dependencies has no ray requirement")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE_PATH.read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            instructions.append((instruction.upper(), rest.strip()))
    return instructions


def dockerfile_arg(name: str) -> str | None:
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG" and rest.split("=", 1)[0] == name:
            return rest.split("=", 1)[1] if "=" in rest else None
    return None


def resolved_image(image: str) -> tuple[str, str]:
    """The (name, tag) a container runs once kustomize's `images:` has been applied."""
    name, _, tag = image.partition(":")
    for entry in kustomization().get("images", []):
        if entry["name"] == name:
            return entry.get("newName", name), entry.get("newTag", tag)
    return name, tag


def contains_version(tag: str, version: str) -> bool:
    return re.search(rf"(^|[^\d.]){re.escape(version)}($|[^\d.])", tag) is not None


def test_dockerfile_pins_the_ray_version_and_installs_the_project() -> None:
    version = pinned_ray_version()
    assert dockerfile_arg("RAY_VERSION") == version
    instructions = dockerfile_instructions()
    assert ("FROM", "rayproject/ray:${RAY_VERSION}-${VARIANT}") in instructions
    assert dockerfile_arg("VARIANT") == "py311-cpu"
    runs = [rest for instruction, rest in instructions if instruction == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run]
    assert pip_runs and all("--no-cache-dir" in run for run in pip_runs)
    assert any(re.search(r"pip install .*\s\.(\s|$)", run) for run in pip_runs), "the project itself must be installed"
    users = [rest for instruction, rest in instructions if instruction == "USER"]
    assert users and users[-1] in {"ray", str(RAY_UID)}, "the image must end as the non-root ray user"


def test_every_image_is_mapped_to_a_tag_with_the_pinned_ray_version() -> None:
    version = pinned_ray_version()
    for doc_id, doc in DOCUMENTS:
        for where, container in containers(doc):
            name, tag = resolved_image(container["image"])
            assert contains_version(tag, version), f"{doc_id} {where}: image {name}:{tag} does not carry Ray {version}"
    for entry in kustomization().get("images", []):
        assert contains_version(entry.get("newTag", ""), version), f"kustomization images: {entry}"
        assert entry.get("newName") != "rayproject/ray", "the stock Ray image lacks the project and its dependencies"


def test_gpu_containers_run_the_gpu_image_variant() -> None:
    for doc_id, doc in DOCUMENTS:
        for where, spec in pod_specs(doc):
            for container in spec["containers"]:
                _, tag = resolved_image(container["image"])
                uses_gpu = int(container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0)) > 0
                assert tag.endswith("-gpu") == uses_gpu, f"{doc_id} {where}: {container['name']} runs {tag}"


def test_ray_version_fields_match_the_pin() -> None:
    version = pinned_ray_version()
    for doc_id, doc in DOCUMENTS:
        for where, cluster in ray_cluster_specs(doc):
            assert cluster.get("rayVersion") == version, f"{doc_id} {where}.rayVersion"


# --- resources, security, credentials ---------------------------------------------------------------


def test_every_container_requests_what_it_is_limited_to() -> None:
    for doc_id, doc in DOCUMENTS:
        found = list(containers(doc))
        for where, cluster in ray_cluster_specs(doc):
            if cluster.get("enableInTreeAutoscaling"):
                found.append((f"{where}.autoscalerOptions", cluster.get("autoscalerOptions", {})))
        for where, container in found:
            resources = container.get("resources", {})
            requests = {key: str(value) for key, value in resources.get("requests", {}).items()}
            limits = {key: str(value) for key, value in resources.get("limits", {}).items()}
            assert {"cpu", "memory"} <= requests.keys(), f"{doc_id} {where}: requests {requests}"
            assert requests == limits, f"{doc_id} {where}: requests {requests} != limits {limits}"


def test_every_pod_runs_as_the_non_root_ray_user() -> None:
    for doc_id, doc in DOCUMENTS:
        for where, spec in pod_specs(doc):
            context = spec.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, f"{doc_id} {where}"
            assert context.get("runAsUser") == RAY_UID, f"{doc_id} {where}"
        found = list(containers(doc))
        for where, cluster in ray_cluster_specs(doc):
            if cluster.get("enableInTreeAutoscaling"):
                found.append((f"{where}.autoscalerOptions", cluster.get("autoscalerOptions", {})))
        for where, container in found:
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, f"{doc_id} {where}"
            assert context.get("runAsUser", RAY_UID) != 0, f"{doc_id} {where}"
            assert context.get("runAsNonRoot", True) is True, f"{doc_id} {where}"


def test_credentials_come_only_from_secret_references() -> None:
    assert not any(doc.get("kind") == "Secret" for _, doc in DOCUMENTS), "Secrets are created by hand, never committed"
    assert "secretGenerator" not in kustomization()
    for doc_id, doc in DOCUMENTS:
        for path, node in walk(doc):
            if path and path[-1] == "env" and isinstance(node, list):
                for variable in node:
                    if variable["name"] in CREDENTIAL_NAMES:
                        assert "value" not in variable, f"{doc_id} {dotted(path)}: literal {variable['name']}"
                        assert "secretKeyRef" in variable.get("valueFrom", {}), f"{doc_id} {dotted(path)}: {variable}"
    for path in [*manifest_paths(), KUSTOMIZATION_PATH, DOCKERFILE_PATH]:
        for match in CREDENTIAL_ASSIGNMENT.finditer(path.read_text()):
            assert CREDENTIAL_PLACEHOLDERS.match(match.group(1)), f"{path.name}: literal credential {match.group(0)!r}"


def test_ray_nodes_get_s3_credentials_from_a_secret_and_the_endpoint_as_plain_env() -> None:
    for doc_id, doc in DOCUMENTS:
        for where, cluster in ray_cluster_specs(doc):
            for group_name, group in ray_groups(cluster):
                container = group["template"]["spec"]["containers"][0]
                from_secret = any("secretRef" in source for source in container.get("envFrom", []))
                keys_from_secret = {
                    variable["name"]
                    for variable in container.get("env", [])
                    if "secretKeyRef" in variable.get("valueFrom", {})
                }
                assert from_secret or {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys_from_secret, (
                    f"{doc_id} {where} {group_name}: no S3 credentials"
                )
                endpoint = [var for var in container.get("env", []) if var["name"] == "AWS_ENDPOINT_URL"]
                assert endpoint and "value" in endpoint[0], f"{doc_id} {where} {group_name}: AWS_ENDPOINT_URL"


def test_only_gpu_pods_tolerate_gpu_nodes_and_gpus_are_requested_exactly() -> None:
    for doc_id, doc in DOCUMENTS:
        for where, spec in pod_specs(doc):
            uses_gpu = gpus_requested(spec) > 0
            assert tolerates_gpu(spec) == uses_gpu, f"{doc_id} {where}: a GPU toleration without GPUs, or the reverse"
            for toleration in spec.get("tolerations", []):
                if toleration.get("key") == GPU_RESOURCE:
                    assert toleration.get("effect") == "NoSchedule", f"{doc_id} {where}: {toleration}"
            for container in spec["containers"]:
                resources = container.get("resources", {})
                requested = resources.get("requests", {}).get(GPU_RESOURCE)
                limited = resources.get("limits", {}).get(GPU_RESOURCE)
                assert str(requested) == str(limited), f"{doc_id} {where}: GPU requests {requested} != {limited}"


def test_long_lived_cluster_autoscales_cpu_and_gpu_groups() -> None:
    (cluster,) = documents_of("RayCluster")
    spec = cluster["spec"]
    assert spec.get("enableInTreeAutoscaling") is True
    groups = {name: group for name, group in ray_groups(spec) if name != "head"}
    gpu_groups = [name for name, group in groups.items() if gpus_requested(group["template"]["spec"]) > 0]
    assert len(gpu_groups) == 1 and len(groups) == 2, f"want one CPU and one GPU worker group, got {sorted(groups)}"
    for doc_id, doc in DOCUMENTS:
        for where, cluster_spec in ray_cluster_specs(doc):
            for name, group in ray_groups(cluster_spec):
                if name != "head":
                    replicas = group.get("replicas", group["minReplicas"])
                    assert group["minReplicas"] <= replicas <= group["maxReplicas"], f"{doc_id} {where} {name}"


# --- jobs, schedules, entrypoints -------------------------------------------------------------------


def test_ray_jobs_clean_up_after_themselves() -> None:
    specs = [(doc_id, where, spec) for doc_id, doc in DOCUMENTS for where, spec in ray_job_specs(doc)]
    assert specs
    for doc_id, where, spec in specs:
        assert spec.get("shutdownAfterJobFinishes") is True, f"{doc_id} {where}"
        assert spec.get("ttlSecondsAfterFinished", -1) >= 0, f"{doc_id} {where}: ttlSecondsAfterFinished"
        assert spec.get("activeDeadlineSeconds", 0) > 0, f"{doc_id} {where}: activeDeadlineSeconds"
        assert spec.get("backoffLimit", -1) >= 0, f"{doc_id} {where}: backoffLimit"
        assert "rayClusterSpec" in spec, f"{doc_id} {where}: a RayJob brings its own cluster"
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "") or "{}")
        assert not {"pip", "conda", "uv"} & runtime_env.keys(), f"{doc_id}: dependencies belong in the image"


def test_cronjob_never_overlaps_and_keeps_bounded_history() -> None:
    (cronjob,) = documents_of("CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    for field in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"):
        assert isinstance(spec.get(field), int), field


def test_nightly_schedules_agree_with_the_settings() -> None:
    values = settings()
    schedulers = documents_of("CronJob") + documents_of("RayCronJob")
    assert len(schedulers) == 2
    for doc in schedulers:
        assert CRON_SCHEDULE.match(doc["spec"]["schedule"]), doc["spec"]["schedule"]
        assert doc["spec"]["schedule"] == values["SCORE_SCHEDULE"]
        assert doc["spec"].get("timeZone") == values["SCORE_TIME_ZONE"]


def test_deploy_labels_never_select_both_nightly_schedulers() -> None:
    roles = {}
    for doc_id, doc in DOCUMENTS:
        role = doc["metadata"].get("labels", {}).get(DEPLOY_LABEL)
        assert role in DEPLOY_ROLES, f"{doc_id}: label {DEPLOY_LABEL}={role!r}"
        roles[doc["kind"]] = role
    assert roles["CronJob"] == roles["RayCluster"], "the CronJob needs the long-lived cluster deployed with it"
    assert roles["CronJob"] != roles["RayCronJob"], "one selector would schedule nightly scoring twice"


def test_manifests_open_with_a_header_that_says_how_to_run_them() -> None:
    for path in [*manifest_paths(), KUSTOMIZATION_PATH]:
        text = path.read_text()
        header = text.split("apiVersion:", 1)[0]
        assert header.startswith("#") and "kubectl " in header, f"{path.name}: header comment with a kubectl command"


def submitted_command(container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Split a container's `ray job submit [options] -- command` into its options and the command."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if len(argv) >= 3 and Path(argv[0]).name in {"sh", "bash"} and argv[1] == "-c":
        argv = shlex.split(argv[2])
    start = next(i for i in range(len(argv) - 2) if argv[i : i + 3] == ["ray", "job", "submit"]) + 3
    separator = argv.index("--", start)
    options, tokens = {}, argv[start:separator]
    for index, token in enumerate(tokens):
        if token.startswith("--"):
            following = tokens[index + 1] if index + 1 < len(tokens) else ""
            options[token] = "" if following.startswith("--") else following
    return options, argv[separator + 1 :]


def entrypoints() -> list[tuple[str, list[str]]]:
    found = []
    for doc_id, doc in DOCUMENTS:
        for where, spec in ray_job_specs(doc):
            found.append((f"{doc_id} {where}.entrypoint", shlex.split(spec["entrypoint"])))
        if doc.get("kind") == "CronJob":
            for where, container in containers(doc):
                found.append((f"{doc_id} {where}", submitted_command(container)[1]))
    return found


ENTRYPOINTS = entrypoints()


def parse_job_arguments(argv: list[str]) -> tuple[str, argparse.Namespace]:
    assert argv[:2] == ["python", "-m"] and argv[2] in JOB_MODULES, f"not a job command: {argv}"
    if importlib.util.find_spec(argv[2]) is None:
        pytest.fail(f"{argv[2]} does not exist, so this command cannot run")
    parser = importlib.import_module(argv[2]).build_parser()
    try:
        return argv[2], parser.parse_args(argv[3:])
    except SystemExit as error:
        pytest.fail(f"{argv[2]} rejects {shlex.join(argv[3:])} (exit {error.code}); see stderr above")


@pytest.mark.parametrize("argv", [argv for _, argv in ENTRYPOINTS], ids=[where for where, _ in ENTRYPOINTS])
def test_entrypoint_parses_and_names_an_existing_config(argv: list[str]) -> None:
    _, arguments = parse_job_arguments(argv)
    assert arguments.config, "cluster runs must name their preset with --config"
    read_preset(arguments.config)  # a packaged preset by name, or a file in the image's app directory
    for name in ("catalog", "output") + (("model",) if hasattr(arguments, "model") else ()):
        assert str(getattr(arguments, name)).startswith("s3://"), f"--{name} must be on S3 for a cluster run"


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value after `flag`, read without the job's parser so that these checks run on their own."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def test_scoring_reads_a_model_that_training_writes() -> None:
    outputs = [flag_value(argv, "--output") for _, argv in ENTRYPOINTS if argv[2:3] == ["jobs.train"]]
    assert outputs and all(outputs)
    for where, argv in ENTRYPOINTS:
        if argv[2:3] == ["jobs.score"]:
            model = flag_value(argv, "--model") or ""
            trained = any(model.startswith(output.rstrip("/") + "/") for output in outputs)
            assert trained, f"{where}: no training run writes --model {model}"


def test_training_cluster_has_a_gpu_per_train_worker() -> None:
    for doc_id, doc in DOCUMENTS:
        for (where, job), (_, cluster) in zip(ray_job_specs(doc), ray_cluster_specs(doc)):
            argv = shlex.split(job["entrypoint"])
            capacity = sum(
                group["maxReplicas"] * gpus_requested(group["template"]["spec"])
                for name, group in ray_groups(cluster)
                if name != "head"
            )
            if argv[2:3] == ["jobs.train"] and "--gpu" in argv:
                workers = int(flag_value(argv, "--workers") or 1)
                assert capacity >= workers, f"{doc_id}: {workers} GPU train workers but {capacity} GPUs"
            elif "--gpu" in argv:
                assert capacity >= 1, f"{doc_id}: GPU scoring on a cluster without GPUs"
            else:
                assert capacity == 0, f"{doc_id} {where}: GPUs that the job never uses"


def test_cronjob_submits_to_the_long_lived_cluster_with_explicit_auth() -> None:
    (cluster,) = documents_of("RayCluster")
    (cronjob,) = documents_of("CronJob")
    ((_, container),) = containers(cronjob)
    options, _ = submitted_command(container)
    assert options["--address"] == f"http://{cluster['metadata']['name']}-head-svc:8265"
    workdirs = [rest for instruction, rest in dockerfile_instructions() if instruction == "WORKDIR"]
    assert options["--working-dir"] == workdirs[-1], "the working dir must be the app directory baked into the image"
    env = {variable["name"]: variable for variable in container.get("env", [])}
    assert env.get("RAY_AUTH_MODE", {}).get("value") in {"token", "disabled"}, "RAY_AUTH_MODE must be set explicitly"
    auth = cluster["spec"].get("authOptions", {})
    assert env["RAY_AUTH_MODE"]["value"] == auth.get("mode", "disabled")
    if auth.get("mode") == "token":
        reference = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (auth["secretName"], "auth_token")


def test_ray_jobs_run_from_the_image_app_directory() -> None:
    workdir = [rest for instruction, rest in dockerfile_instructions() if instruction == "WORKDIR"][-1]
    for doc_id, doc in DOCUMENTS:
        for _, spec in ray_job_specs(doc):
            runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "") or "{}")
            working_dir = runtime_env.get("working_dir", workdir)
            assert working_dir == workdir, f"{doc_id}: --config paths are relative to {workdir}"


def test_scoring_entrypoints_leave_actor_counts_to_the_preset() -> None:
    """`actors: auto` sizes the pool to the cluster (a core or a GPU each); a hand-written count
    in an entrypoint goes stale the day the worker group changes."""
    for where, argv in ENTRYPOINTS:
        if argv[2:3] == ["jobs.score"]:
            assert "--actors" not in argv, f"{where}: hand-written --actors"
            config = load_config(flag_value(argv, "--config"), [], **{"resources.gpu": "--gpu" in argv or None})
            assert config.resources.actors == "auto", where


def test_scheduled_nights_write_one_output_per_night_that_a_retry_reuses() -> None:
    """A retry of the same night must find the unfinished run and resume it, so the output may
    depend on the date but never on the time of day the retry started."""
    scheduled = [(where, argv) for where, argv in ENTRYPOINTS if "Cron" in where]
    assert len(scheduled) == 2
    for where, argv in scheduled:
        output = flag_value(argv, "--output") or ""
        assert "%H" not in output and "%M" not in output and "%S" not in output, f"{where}: {output}"
    (cronjob,) = documents_of("CronJob")
    script = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    night = re.search(r'night="\$\(date -u \+([^)]*)\)"', script)
    assert night and not set("HMS") & set(night.group(1).replace("%", "")), script


# --- kustomize ------------------------------------------------------------------------------------


def resolve_field_path(node: Any, field_path: str) -> list[tuple[str, Any]]:
    """Follows a kustomize replacement fieldPath (`a.[name=x].*.0`) so its targets are checked without kustomize."""
    found: list[tuple[str, Any]] = [("", node)]
    for segment in re.findall(r"\[[^\]]*\]|[^.]+", field_path):
        following = []
        for path, value in found:
            if segment == "*" and isinstance(value, list):
                following += [(f"{path}.{index}", item) for index, item in enumerate(value)]
            elif segment.startswith("[") and isinstance(value, list):
                key, wanted = segment[1:-1].split("=", 1)
                following += [
                    (f"{path}.{index}", item)
                    for index, item in enumerate(value)
                    if isinstance(item, dict) and item.get(key) == wanted
                ]
            elif segment.isdigit() and isinstance(value, list) and int(segment) < len(value):
                following.append((f"{path}.{segment}", value[int(segment)]))
            elif isinstance(value, dict) and segment in value:
                following.append((f"{path}.{segment}", value[segment]))
        found = following
    return [(path.lstrip("."), value) for path, value in found]


def replacement_targets(source_field: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(doc id, path, current value, options) for every field a replacement from `source_field` writes."""
    targets = []
    for replacement in kustomization().get("replacements", []):
        source = replacement["source"]
        if source.get("name") != SETTINGS_CONFIGMAP or source["fieldPath"] != source_field:
            continue
        for target in replacement["targets"]:
            select = target["select"]
            selected = [
                (doc_id, doc)
                for doc_id, doc in DOCUMENTS
                if doc.get("kind") == select.get("kind")
                and select.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
            ]
            assert selected, f"replacement target {select} selects nothing"
            for doc_id, doc in selected:
                for field_path in target["fieldPaths"]:
                    resolved = resolve_field_path(doc, field_path)
                    assert resolved, f"{doc_id}: replacement fieldPath {field_path} finds nothing"
                    targets += [(doc_id, path, value, target.get("options", {})) for path, value in resolved]
    return targets


def test_bucket_replacements_land_on_every_bucket_in_every_command() -> None:
    bucket = settings()["BUCKET"]
    targeted: dict[tuple[str, str], set[int]] = {}
    for doc_id, path, value, options in replacement_targets("data.BUCKET"):
        pieces = value.split(options["delimiter"])
        piece = pieces[options["index"]]
        assert piece == bucket, f"{doc_id} {path}: piece {options['index']} is {piece!r}, not the bucket"
        targeted.setdefault((doc_id, path), set()).add(options["index"])
    for doc_id, doc in DOCUMENTS:
        for path, node in walk(doc):
            if isinstance(node, str) and f"s3://{bucket}/" in node:
                wanted = {index for index, piece in enumerate(node.split("/")) if piece == bucket}
                assert targeted.get((doc_id, dotted(path))) == wanted, f"{doc_id} {dotted(path)}: bucket left behind"


def test_endpoint_replacements_reach_every_endpoint_variable() -> None:
    endpoint = settings()["AWS_ENDPOINT_URL"]
    targets = replacement_targets("data.AWS_ENDPOINT_URL")
    assert all(value == endpoint for _, _, value, _ in targets)
    declared = [
        (doc_id, dotted(path))
        for doc_id, doc in DOCUMENTS
        for path, node in walk(doc)
        if isinstance(node, dict) and node.get("name") == "AWS_ENDPOINT_URL" and "value" in node
    ]
    assert sorted((doc_id, path.rsplit(".", 1)[0]) for doc_id, path, _, _ in targets) == sorted(declared)


def test_kustomize_build_applies_settings_and_images(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        skip_or_fail("kubectl not on PATH; the other tests check kustomization.yaml without rendering it")
    workdir = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, workdir)
    values = {"BUCKET": "other-bucket", "AWS_ENDPOINT_URL": "http://minio.invalid:9000", "SCORE_SCHEDULE": "15 3 * * *"}
    text = (workdir / "kustomization.yaml").read_text()
    current = settings()
    for key, value in values.items():
        assert f"- {key}={current[key]}" in text
        text = text.replace(f"- {key}={current[key]}", f"- {key}={value}")
    (workdir / "kustomization.yaml").write_text(text)
    command = [kubectl, "kustomize", str(workdir)]
    rendered = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    docs = [doc for doc in yaml.load_all(rendered, Loader=yaml.CSafeLoader) if doc]
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert sorted(doc["kind"] for doc in docs) == kinds, "the settings ConfigMap must stay out of the output"
    assert f"s3://{current['BUCKET']}/" not in rendered and current["AWS_ENDPOINT_URL"] not in rendered
    images = {entry["name"]: f"{entry['newName']}:{entry['newTag']}" for entry in kustomization()["images"]}
    for doc in docs:
        assert {container["image"] for _, container in containers(doc)} <= set(images.values())
        if doc["kind"] in {"CronJob", "RayCronJob"}:
            assert doc["spec"]["schedule"] == values["SCORE_SCHEDULE"]
    strings = [node for _, doc in DOCUMENTS for _, node in walk(doc) if isinstance(node, str)]
    expected = sum(node.count(f"s3://{current['BUCKET']}/") for node in strings)
    assert rendered.count(f"s3://{values['BUCKET']}/") == expected
    for doc in docs:
        assert schema_errors(doc, request) == [], doc["metadata"]["name"]
