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

import pytest

from tests.conftest import REPO
from tests.factories import make_tree_catalog
from tests.ray_cluster import VENV_BIN, cluster_env, head_node

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]

ROWS = 36


@pytest.fixture(scope="module")
def cluster():
    with head_node(cluster_env()) as started:
        yield started


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_tree_catalog(str(tmp_path_factory.mktemp("submit") / "catalog"), {"red": 12, "green": 12, "blue": 12})


def test_a_submitted_driver_counts_as_on_a_cluster(cluster):
    """The jobs (pipeline.resources) rely on `ray job submit` giving the driver RAY_ADDRESS: the GCS
    address of the cluster (Ray 2.60 advertises the node's primary IP there even with
    --node-ip-address 127.0.0.1)."""
    code = (
        "import os, sys; from pipeline.resources import on_remote_cluster; "
        "size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk('.') for f in fs); "
        "print('ADDRESS=' + os.environ.get('RAY_ADDRESS', ''), 'REMOTE=' + str(on_remote_cluster()), "
        "'PYTHON=' + sys.executable, 'SIZE=' + str(size), 'TOP=' + ','.join(sorted(os.listdir('.'))))"
    )
    result = cluster.submit("python", "-c", code, timeout=300)
    assert result.returncode == 0
    found = re.search(r"ADDRESS=(\S*) REMOTE=(\S+) PYTHON=(\S+) SIZE=(\d+) TOP=(\S*)", result.stdout)
    assert found, result.stdout
    address, remote, python, size, top = found.groups()
    assert address.endswith(f":{cluster.gcs_port}") and remote == "True"
    assert python.startswith(VENV_BIN)  # the job's `python` is this venv's
    # The working-directory copy the driver runs in: the code, without .venv, .git, tests (.rayignore).
    assert {"jobs", "pipeline", "models"} <= set(top.split(",")) and not {".venv", ".git", "tests"} & set(
        top.split(",")
    )
    assert int(size) < 50_000_000


def test_a_relative_catalog_path_fails_the_submitted_job(cluster, catalog, tmp_path):
    relative = os.path.relpath(catalog, REPO)  # names the same folder from here, not from the job's copy
    result = cluster.submit(
        "python",
        "-m",
        "jobs.score",
        "--catalog",
        relative,
        "--model",
        str(tmp_path / "m"),
        "--output",
        str(tmp_path / "out"),
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1  # the CLI's "job FAILED"
    assert "relative path" in output and "exit code 2" in output  # jobs.score's bad-input exit
    assert not os.path.exists(tmp_path / "out")


def test_the_cluster_preset_scores_on_a_node_whose_actors_take_every_cpu(cluster, catalog, color_artifact, tmp_path):
    """`--config cluster` on 2 CPUs: the two scoring actors hold both CPUs, so nothing upstream of
    them may still need one. A repartition task left there once waited for a CPU for ever."""
    output = tmp_path / "out"
    result = cluster.submit(
        "python",
        "-m",
        "jobs.score",
        "--catalog",
        catalog,
        "--model",
        color_artifact,
        "--output",
        str(output),
        "--config",
        "cluster",
        timeout=420,
    )
    assert result.returncode == 0
    run = json.load(open(output / "run.json"))
    assert run["status"] == "completed" and run["counts"]["out"] == ROWS
