"""The README's cluster commands and every k8s/ entrypoint, run as written on a real Ray cluster.

- The cluster: `ray start --head` on 127.0.0.1 with token auth, 2 CPUs and 2 *logical* GPUs, so the
  documented `--gpu` runs schedule as they would on GPU nodes (TensorFlow then finds no CUDA
  device and computes on the CPU).
- The object store: moto's S3 server on loopback. The cluster's processes get its endpoint and
  fake credentials the way k8s/ gives them to pods (container env and a Secret).
- The image: this checkout, with MobileNetV2 no-top weights in Keras' cache, as
  docker/Dockerfile bakes them in. They are the offline stand-in from `../shared/weights` saved
  under Keras' ImageNet file name, since ImageNet weights cannot be downloaded here.
- The commands: read from README.md and from `kubectl kustomize k8s/` (tests/documented.py). The
  only changes are the substitutions the README names: HEAD, TOKEN, BUCKET, the S3 endpoint, and
  the image's app directory, which is this checkout.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import documented
from tests.conftest import REPO, skip_or_fail
from tests.factories import make_tree_catalog
from tests.ray_cluster import VENV_BIN, cluster_env, head_node

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3000)]

BUCKET = f"cc-docs-{uuid.uuid4().hex[:8]}"
KEY_ID, SECRET = "documented-key-id", "documented-secret-value"
TOKEN = uuid.uuid4().hex
SAMPLE = {"red": 40, "green": 40, "blue": 40}  # enough for 2 workers × 32 images a step
# The catalog every scoring entrypoint reads. The killed-night test grows it to LONG_NIGHT first,
# long enough to kill a run part-way; the others need no more than a few files' worth of rows.
INCOMING = {"red": 200, "green": 200, "blue": 200}
LONG_NIGHT = {"red": 1500, "green": 1500, "blue": 1500}
STAND_IN = Path(REPO).parent / "shared" / "weights" / "mobilenet_v2_1.0_no_top_imagenet_partial.weights.h5"
KERAS_IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
JOB_TIMEOUT = 1500


class Bucket:
    def __init__(self, endpoint: str):
        import boto3

        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def json(self, key: str) -> dict:
        return json.loads(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def predictions(self, prefix: str):
        """(rows by footer, distinct image ids) over the output's prediction files."""
        rows, ids = 0, set()
        for key in self.keys(f"{prefix}/predictions/"):
            if key.endswith(".parquet"):
                table = pq.read_table(
                    io.BytesIO(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()), columns=["image_id"]
                )
                rows += table.num_rows
                ids.update(table.column("image_id").to_pylist())
        return rows, ids

    def delete(self, prefix: str) -> None:
        for key in self.keys(prefix):
            self.client.delete_object(Bucket=BUCKET, Key=key)

    def upload_tree(self, local: str, prefix: str) -> None:
        paths = [os.path.join(root, name) for root, _, names in os.walk(local) for name in names]

        def put(path: str) -> None:
            with open(path, "rb") as handle:
                self.client.put_object(
                    Bucket=BUCKET, Key=f"{prefix}/{os.path.relpath(path, local)}", Body=handle.read()
                )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, paths))


def keras_cache_with_weights(directory: Path) -> str:
    """A KERAS_HOME whose models/ holds MobileNetV2 no-top weights under Keras' ImageNet file name."""
    if not STAND_IN.exists():
        skip_or_fail(f"{STAND_IN} is missing")
    code = f"""
import h5py, keras
from keras.src.legacy.saving import legacy_h5_format
model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights={str(STAND_IN)!r})
with h5py.File({str(directory / "models" / KERAS_IMAGENET_FILE)!r}, "w") as handle:
    legacy_h5_format.save_weights_to_hdf5_group(handle, model)
"""
    (directory / "models").mkdir(parents=True)
    subprocess.run([os.path.join(VENV_BIN, "python"), "-c", code], check=True, capture_output=True, timeout=300)
    return str(directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """moto S3 with the catalogs in BUCKET, and a token-auth Ray head whose processes see it."""
    from moto.server import ThreadedMotoServer

    work = tmp_path_factory.mktemp("documented")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        bucket = Bucket(endpoint)
        bucket.client.create_bucket(Bucket=BUCKET)
        bucket.upload_tree(make_tree_catalog(str(work / "sample"), SAMPLE), "catalogs/sample")
        bucket.upload_tree(make_tree_catalog(str(work / "incoming"), INCOMING, seed=1), "catalogs/incoming")
        env = cluster_env(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=TOKEN,
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID=KEY_ID,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_DEFAULT_REGION="us-east-1",
            KERAS_HOME=keras_cache_with_weights(work / "keras"),
        )
        with head_node(env, "--num-gpus", "2") as cluster:
            yield cluster, bucket, endpoint, work
    finally:
        server.stop()


def client_env(cluster) -> dict[str, str]:
    """What a user's shell has: no cluster settings, no S3 endpoint; the commands bring their own."""
    env = {key: value for key, value in cluster.env.items() if not key.startswith(("AWS_", "RAY_AUTH", "KERAS_HOME"))}
    return env


def run_shell(script: str, env: dict[str, str], timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(result.stdout[-8000:], result.stderr[-4000:], sep="\n")  # shown by pytest on failure
    return result


def substitute(text: str, cluster, endpoint: str) -> str:
    return (
        text.replace(documented.README_HEAD, cluster.dashboard)
        .replace(documented.README_TOKEN, f"RAY_AUTH_TOKEN={TOKEN}")
        .replace(f"s3://{documented.README_BUCKET}/", f"s3://{BUCKET}/")
        .replace(documented.README_ENDPOINT, endpoint)
    )


def kuberay_submit(command: documented.K8sCommand, cluster, submission_id: str) -> str:
    """The shell command KubeRay's submitter runs for a RayJob: the entrypoint spliced in as written."""
    runtime_env = dict(command.runtime_env)
    if runtime_env.get("working_dir") == documented.IMAGE_APP_DIR:
        runtime_env["working_dir"] = REPO  # the image's app directory is this checkout
    return (
        f"ray job submit --address {cluster.dashboard} --runtime-env-json {shlex.quote(json.dumps(runtime_env))} "
        f"--submission-id {submission_id} -- {command.entrypoint}"
    )


def cronjob_script(command: documented.K8sCommand, cluster) -> str:
    return command.entrypoint.replace(documented.K8S_HEAD_SERVICE, cluster.dashboard).replace(
        f"--working-dir {documented.IMAGE_APP_DIR}", f"--working-dir {REPO}"
    )


def k8s_env(cluster, command: documented.K8sCommand) -> dict[str, str]:
    env = client_env(cluster)
    if command.kind == "CronJob":
        env.update(command.env)
        env["RAY_AUTH_TOKEN"] = TOKEN  # the Secret the container's env names
    else:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)  # what KubeRay injects with authOptions: token
    return env


@pytest.fixture(scope="module")
def k8s(world):
    cluster, bucket, endpoint, work = world
    docs = documented.render_k8s(work / "k8s", {"BUCKET": BUCKET, "AWS_ENDPOINT_URL": endpoint})
    return {command.where: command for command in documented.k8s_commands(docs)}


def output_of(entrypoint: str) -> str:
    """The --output prefix (inside the bucket) of a job command; a `$(date ...)` stays as written."""
    argv = shlex.split(entrypoint.replace("$(", "(").replace('"', ""))
    return argv[argv.index("--output") + 1].removeprefix(f"s3://{BUCKET}/")


def assert_complete_scoring(bucket: Bucket, prefix: str) -> dict:
    run = bucket.json(f"{prefix}/run.json")
    assert run["status"] == "completed", run
    rows, ids = bucket.predictions(prefix)
    expected = len([key for key in bucket.keys("catalogs/incoming/") if key.endswith(".png")])
    assert expected >= sum(INCOMING.values())
    assert rows == len(ids) == run["counts"]["in"] == run["counts"]["out"] == expected
    return run


def test_the_readme_cluster_block_trains_then_scores_into_the_bucket(world):
    cluster, bucket, endpoint, _ = world
    block = documented.readme_cluster_block()
    started = time.monotonic()
    result = run_shell(substitute(block, cluster, endpoint), client_env(cluster))
    assert result.returncode == 0
    print(f"README block: {time.monotonic() - started:.0f} s")
    for name in ("custom_cnn", "mobilenet_v2"):
        card = bucket.json(f"models/latest/{name}/model_card.json")
        assert card["workers"] == 2 and card["config"]["resources"]["gpu"] is True
        # The preset's 4 CPUs per worker, fitted to this 2-CPU cluster instead of hanging.
        assert card["config"]["resources"]["cpus_per_worker"] == 0.5
    assert bucket.json("models/latest/mobilenet_v2/model_card.json")["weights_source"].startswith("imagenet")
    (score,) = [documented.job_argv(line) for line in documented.shell_commands(block) if "jobs.score" in line]
    run = assert_complete_scoring(
        bucket, score[score.index("--output") + 1].removeprefix(f"s3://{documented.README_BUCKET}/")
    )
    assert run["config"]["resources"]["actors"] == 2  # `auto`: one per core of this cluster


@pytest.mark.parametrize(
    "where",
    [
        "RayJob/catalog-classifier-train",
        "RayJob/catalog-classifier-score",
        "RayJob/catalog-classifier-score-gpu",
        "CronJob/catalog-classifier-score-nightly",
    ],
)
def test_k8s_entrypoint_runs_as_written(world, k8s, where):
    cluster, bucket, _, _ = world
    command = k8s[where]
    if command.kind == "CronJob":
        script = cronjob_script(command, cluster)
        bucket.delete("predictions/nightly/")  # the RayCronJob test scores the same nights
    else:
        script = kuberay_submit(command, cluster, f"test-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    result = run_shell(script, k8s_env(cluster, command))
    assert result.returncode == 0
    print(f"{where}: {time.monotonic() - started:.0f} s")
    if "jobs.train" in command.entrypoint:
        assert bucket.keys("models/latest/mobilenet_v2/model.keras")
        return
    prefix = output_of(command.entrypoint)
    if "$" in prefix or "(" in prefix:  # a night's date, computed by the command's shell
        (prefix,) = {
            key.split("/run.json")[0] for key in bucket.keys("predictions/nightly/") if key.endswith("run.json")
        }
    run = assert_complete_scoring(bucket, prefix)
    gpu = "--gpu" in command.entrypoint
    assert run["config"]["resources"]["gpu"] is gpu
    assert run["config"]["resources"]["actors"] == 2  # one per GPU with --gpu, else one per core


def test_every_k8s_entrypoint_is_covered(k8s):
    covered = {
        "RayJob/catalog-classifier-train",
        "RayJob/catalog-classifier-score",
        "RayJob/catalog-classifier-score-gpu",
        "CronJob/catalog-classifier-score-nightly",
        "RayCronJob/catalog-classifier-score-nightly",
    }
    assert set(k8s) == covered


def test_a_killed_scheduled_night_is_retried_into_every_row_exactly_once(world, k8s):
    """The RayCronJob's entrypoint, killed once its first prediction files landed, then submitted
    again as KubeRay's retry would: the same night's output, resumed, each row exactly once."""
    cluster, bucket, _, work = world
    command = k8s["RayCronJob/catalog-classifier-score-nightly"]
    bucket.delete("predictions/nightly/")
    bucket.upload_tree(make_tree_catalog(str(work / "long-night"), LONG_NIGHT, seed=1), "catalogs/incoming")
    long_night = sum(LONG_NIGHT.values())
    env = k8s_env(cluster, command)
    first = f"night-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        ["bash", "-c", kuberay_submit(command, cluster, first)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not [key for key in bucket.keys("predictions/nightly/") if key.endswith(".parquet")]:
            assert process.poll() is None, "the night finished before any file landed"
            assert time.monotonic() < deadline, "no prediction file landed"
            time.sleep(0.5)
        stop = subprocess.run(
            [os.path.join(VENV_BIN, "ray"), "job", "stop", "--address", cluster.dashboard, first],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stop.returncode == 0, stop.stderr
    finally:
        process.wait(timeout=300)
    killed_rows, _ = bucket.predictions(
        next(
            iter(
                {
                    key.split("/predictions/")[0]
                    for key in bucket.keys("predictions/nightly/")
                    if key.endswith(".parquet")
                }
            )
        )
    )
    assert 0 < killed_rows < long_night, "the kill must land part-way"

    retry = run_shell(kuberay_submit(command, cluster, f"night-{uuid.uuid4().hex[:8]}"), env)
    assert retry.returncode == 0
    (prefix,) = {key.split("/run.json")[0] for key in bucket.keys("predictions/nightly/") if key.endswith("run.json")}
    run = assert_complete_scoring(bucket, prefix)
    assert run["counts"]["resumed"] == killed_rows  # every file the killed run wrote is reused
    assert run["counts"]["in"] == long_night
    assert run["counts"]["resumed"] + run["counts"]["scored_this_run"] == long_night
    print(
        f"killed night: {killed_rows} rows written before the kill, {run['counts']['resumed']} reused, "
        f"{run['counts']['scored_this_run']} scored by the retry"
    )
