"""A real `ray start --head` cluster on loopback for tests that submit jobs the way users do.

The cluster is the test's own: `ray start --block` runs as a child in its own temp dir and on its
own ports, and teardown ends exactly that process tree by PID. Not `ray stop --force`, which
SIGKILLs every Ray process on the machine, including any other Ray running tests next to this one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import REPO

VENV_BIN = os.path.dirname(sys.executable)  # not resolved: a venv's python is a symlink out of it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment for `ray start` and `ray job submit`: this venv first on PATH (so the job's
    `python` is this interpreter), token auth off unless `extra` turns it on (once
    ~/.ray/auth_token exists, an unset RAY_AUTH_MODE turns it on and the CLI is refused), and no
    RAY_ADDRESS leaking in from the test process."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    env.update(
        {
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
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
        command = [
            os.path.join(VENV_BIN, "ray"),
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--working-dir",
            REPO,
            "--",
            *entrypoint,
        ]
        result = subprocess.run(command, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        print(result.stdout[-6000:], result.stderr[-3000:], sep="\n")  # shown by pytest on failure
        return result


@contextlib.contextmanager
def head_node(env: dict[str, str], *extra_args: str) -> Iterator[Cluster]:
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs (plus `extra_args`), until the block ends."""
    import ray

    ray.shutdown()  # the test process must not be connected to any Ray of its own
    temp_dir = tempfile.mkdtemp(prefix="rayjs-", dir="/tmp")  # short: Ray's Unix socket paths must fit
    port, dashboard_port = free_port(), free_port()
    command = [
        os.path.join(VENV_BIN, "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard_port),
        "--ray-client-server-port",
        str(free_port()),
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--num-cpus",
        "2",
        "--disable-usage-stats",
        "--temp-dir",
        temp_dir,
        *extra_args,
    ]
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")
    process = subprocess.Popen(command, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start exited with {process.returncode}:\n{open(log.name).read()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{dashboard}/api/version", timeout=5) as response:
                    if response.status == 200:
                        break
            except urllib.error.HTTPError:  # it answers (401 with token auth on): it is up
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
