"""The jobs through `ray job submit` against a real `ray start --head` cluster on loopback, the way
the README runs them on a cluster: a working-directory upload, a driver on the head node.

The cluster is this test's own: `ray start --block` runs as our child in its own temp dir and on
its own ports, and teardown ends exactly that process tree by PID. Not `ray stop --force`, which
SIGKILLs every Ray process on the machine, including any other Ray running tests next to this one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
import pytest

from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]

VENV_BIN = os.path.dirname(sys.executable)  # not resolved: a venv's python is a symlink out of it
ROWS = 36


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cluster_env() -> dict[str, str]:
    """The environment for `ray start` and `ray job submit`: this venv first on PATH (so the job's
    `python` is this interpreter), token auth off explicitly (once ~/.ray/auth_token
    exists, an unset RAY_AUTH_MODE turns it on and the CLI is refused), and no RAY_ADDRESS leaking
    in from the test process."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    env.update({"PATH": VENV_BIN + os.pathsep + env.get("PATH", ""), "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    return env


def end_process_tree(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the `ray start --block` process and every descendant (raylet, GCS, dashboard,
    workers, job drivers), then SIGKILL whatever is left after `grace` seconds."""
    try:
        root = psutil.Process(process.pid)
        tree = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class Cluster:
    def __init__(self, dashboard: str, gcs_port: int, env: dict[str, str]):
        self.dashboard, self.gcs_port, self.env = dashboard, gcs_port, env

    def submit(self, *entrypoint: str, timeout: float) -> subprocess.CompletedProcess:
        """`ray job submit` (waits for the job, tails its log; exit 1 when the job FAILED)."""
        command = [os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", self.dashboard,
                   "--working-dir", REPO, "--", *entrypoint]
        result = subprocess.run(command, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        print(result.stdout[-6000:], result.stderr[-3000:], sep="\n")  # shown by pytest on failure
        return result


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.shutdown()  # the test process must not be connected to any Ray of its own
    temp_dir = tempfile.mkdtemp(prefix="rayjs-", dir="/tmp")  # short: Ray's Unix socket paths must fit
    port, dashboard_port = free_port(), free_port()
    env = cluster_env()
    command = [os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
               "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
               "--num-cpus", "2", "--disable-usage-stats", "--temp-dir", temp_dir]
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")
    process = subprocess.Popen(command, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start exited with {process.returncode}:\n{open(log.name).read()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{dashboard}/api/jobs/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard at {dashboard} did not come up:\n{open(log.name).read()[-4000:]}")
            time.sleep(2)
        yield Cluster(dashboard, port, env)
    finally:
        end_process_tree(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_tree_catalog(str(tmp_path_factory.mktemp("submit") / "catalog"), {"red": 12, "green": 12, "blue": 12})


def test_a_submitted_driver_counts_as_on_a_cluster(cluster):
    """jobs.runtime relies on `ray job submit` giving the driver RAY_ADDRESS: the GCS address of the
    cluster (Ray 2.60 advertises the node's primary IP there even with --node-ip-address 127.0.0.1)."""
    code = ("import os, sys; from jobs.runtime import on_remote_cluster; "
            "size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk('.') for f in fs); "
            "print('ADDRESS=' + os.environ.get('RAY_ADDRESS', ''), 'REMOTE=' + str(on_remote_cluster()), "
            "'PYTHON=' + sys.executable, 'SIZE=' + str(size), 'TOP=' + ','.join(sorted(os.listdir('.'))))")
    result = cluster.submit("python", "-c", code, timeout=300)
    assert result.returncode == 0
    found = re.search(r"ADDRESS=(\S*) REMOTE=(\S+) PYTHON=(\S+) SIZE=(\d+) TOP=(\S*)", result.stdout)
    assert found, result.stdout
    address, remote, python, size, top = found.groups()
    assert address.endswith(f":{cluster.gcs_port}") and remote == "True"
    assert python.startswith(VENV_BIN)  # the job's `python` is this venv's
    # The working-directory copy the driver runs in: the code, without .venv, .git, tests (.rayignore).
    assert {"jobs", "pipeline", "models"} <= set(top.split(",")) and not {".venv", ".git", "tests"} & set(top.split(","))
    assert int(size) < 50_000_000


def test_train_then_score_through_ray_job_submit(cluster, catalog, tmp_path):
    models, scores = str(tmp_path / "models"), str(tmp_path / "scores")
    trained = cluster.submit(
        "python", "-m", "jobs.train", "--catalog", catalog, "--output", models, "--models", "custom_cnn",
        "--workers", "2", "--epochs", "1", "--image-size", "32", "--set", "train.batch_size_per_worker=4",
        "--set", "resources.cpus_per_worker=0.5", timeout=900)
    assert trained.returncode == 0
    assert "succeeded" in trained.stdout + trained.stderr
    card = json.load(open(os.path.join(models, "custom_cnn", "model_card.json")))
    assert card["class_names"] == ["blue", "green", "red"] and card["workers"] == 2
    assert os.path.getsize(os.path.join(models, "custom_cnn", "model.keras")) > 0

    scored = cluster.submit(
        "python", "-m", "jobs.score", "--catalog", catalog, "--model", os.path.join(models, "custom_cnn"),
        "--output", scores, "--set", "resources.cpus_per_actor=0.5", timeout=500)
    assert scored.returncode == 0
    run = json.load(open(os.path.join(scores, "run.json")))
    assert run["status"] == "completed"
    assert run["counts"]["in"] == run["counts"]["out"] == ROWS
    assert run["model"]["version"] == card["version"]
    assert [name for name in os.listdir(os.path.join(scores, "predictions")) if name.endswith(".parquet")]


def test_a_relative_catalog_path_fails_the_submitted_job(cluster, catalog, tmp_path):
    relative = os.path.relpath(catalog, REPO)  # names the same folder from here, not from the job's copy
    result = cluster.submit("python", "-m", "jobs.score", "--catalog", relative, "--model", str(tmp_path / "m"),
                            "--output", str(tmp_path / "out"), timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1  # the CLI's "job FAILED"
    assert "relative path" in output and "exit code 2" in output  # jobs.score's bad-input exit
    assert not os.path.exists(tmp_path / "out")
