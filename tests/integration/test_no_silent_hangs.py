"""No configuration hangs silently: the README's usage lines with defaults on a 2-CPU Ray, a stale
`ray_current_cluster` file, and the stall watchdog in training and in scoring.

The usage lines come from the README's "Using it" synopsis: each run uses only flags it offers,
with values small enough for CI, and every resource setting left at its default.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jobs.config import load_config
from pipeline.catalog import LabelIndex, read_catalog_frame
from pipeline.splits import make_split
from pipeline.train.data import build_datasets
from pipeline.train.trainer import fit
from pipeline.train.worker import WorkerConfig
from pipeline.watchdog import StalledError
from tests import documented
from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

# The embedded Ray gets exactly 2 CPUs, the size this guard is about, on any machine.
TWO_CPUS = ["--set", "resources.num_cpus=2"]
# The flags each run uses, all offered by the README synopsis (checked below).
TRAIN_FLAGS = ["--workers", "2", "--epochs", "1", "--image-size", "32", "--models", "custom_cnn", "--weights", "none"]
SCORE_FLAGS = ["--batch-size", "16"]
RAY_CURRENT_CLUSTER = "/tmp/ray/ray_current_cluster"  # where `ray.init()` looks without an address


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_tree_catalog(str(tmp_path_factory.mktemp("usage") / "catalog"), {"red": 40, "green": 40, "blue": 40})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def stale_cluster_file():
    """A `ray_current_cluster` file naming a head that is gone, as a stopped `ray start --head`
    leaves it; restored afterwards."""
    previous = open(RAY_CURRENT_CLUSTER).read() if os.path.exists(RAY_CURRENT_CLUSTER) else None
    os.makedirs(os.path.dirname(RAY_CURRENT_CLUSTER), exist_ok=True)
    with open(RAY_CURRENT_CLUSTER, "w") as handle:
        handle.write(f"127.0.0.1:{closed_port()}")
    try:
        yield
    finally:
        if previous is None:
            os.remove(RAY_CURRENT_CLUSTER)
        else:
            with open(RAY_CURRENT_CLUSTER, "w") as handle:
                handle.write(previous)


def run_job(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "CI_RAY_ADDRESS")}
    command = [sys.executable, "-m", module, *args]
    try:
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} hung for {timeout} s:\n{(error.stderr or b'')[-3000:]}")


def test_the_usage_flags_used_here_are_the_readme_synopsis():
    usage = documented.readme_usage()
    assert {"--catalog", "--output"} | set(TRAIN_FLAGS[::2]) <= usage["jobs.train"]
    assert {"--catalog", "--model", "--output"} | set(SCORE_FLAGS[::2]) <= usage["jobs.score"]


def test_readme_usage_lines_with_defaults_finish_on_two_cpus_despite_a_stale_cluster_file(catalog, tmp_path):
    models, scores = str(tmp_path / "models"), str(tmp_path / "scores")
    with stale_cluster_file():
        started = time.monotonic()
        trained = run_job("jobs.train", "--catalog", catalog, "--output", models, *TRAIN_FLAGS, *TWO_CPUS)
        took = time.monotonic() - started
    assert trained.returncode == 0, trained.stderr[-4000:]
    log = open(os.path.join(models, "logs", "train.log"), encoding="utf-8").read()  # the console is quiet
    assert "embedded local Ray" in log
    # Defaults ask 1 CPU per worker: 2 workers would leave Ray Data none. Shrunk, and said.
    assert "using 0.5 per worker" in log
    card = json.load(open(os.path.join(models, "custom_cnn", "model_card.json")))
    assert card["config"]["resources"]["cpus_per_worker"] == 0.5 and card["workers"] == 2
    print(f"train usage line: {took:.0f} s")

    scored = run_job(
        "jobs.score",
        "--catalog",
        catalog,
        "--model",
        os.path.join(models, "custom_cnn"),
        "--output",
        scores,
        *SCORE_FLAGS,
        *TWO_CPUS,
    )
    assert scored.returncode == 0, scored.stderr[-4000:]
    run = json.load(open(os.path.join(scores, "run.json")))
    assert run["status"] == "completed" and run["counts"]["out"] == 120
    assert run["config"]["resources"]["actors"] == 1


def test_a_ray_address_that_is_gone_exits_2_in_seconds_naming_it(catalog, color_artifact, tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    env = dict(os.environ, RAY_ADDRESS=address)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.score",
            "--catalog",
            catalog,
            "--model",
            color_artifact,
            "--output",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"RAY_ADDRESS='{address}' (from the environment)" in result.stderr and "does not answer" in result.stderr
    assert time.monotonic() - started < 60


def worker_config(resources, train, heartbeat_classes: int = 3) -> WorkerConfig:
    return WorkerConfig(
        model_name="custom_cnn",
        num_classes=heartbeat_classes,
        image_size=32,
        two_phase=False,
        weights=None,
        dropout=0.5,
        class_weights=(1.0,) * heartbeat_classes,
        train=train,
        workers=resources.workers,
        cpus_per_worker=resources.cpus_per_worker,
        gpu=False,
    )


def training_inputs(catalog: str, *overrides: str):
    config = load_config(None, ["model.image_size=32", "train.batch_size_per_worker=8", *overrides])
    frame = read_catalog_frame(catalog)
    label_index = LabelIndex.fit(frame["label"])
    frame = make_split(frame, 0.15, 0.15, 0)
    datasets, _ = build_datasets(frame, label_index, 32, config.data, config.augment, config.train.imbalance)
    return config, datasets


def test_the_watchdog_ends_a_training_run_that_waits_for_cpus_for_ever(ray_local, catalog, tmp_path):
    """The issue's hang, forced past the resource check: 2 workers × 1 CPU on 2 CPUs, with the
    augmentation tasks that then never get a CPU. The watchdog ends it and says why."""
    config, datasets = training_inputs(
        catalog, "resources.cpus_per_worker=1", "resources.stall_timeout_s=30", "train.epochs=2"
    )
    started = time.monotonic()
    with pytest.raises(
        StalledError, match=r"training custom_cnn made no progress for \d+ s \(resources.stall_timeout_s=30\)"
    ):
        fit(
            "custom_cnn",
            datasets,
            worker_config(config.resources, config.train),
            config.resources,
            str(tmp_path / "ray_train"),
            "stalled",
        )
    assert time.monotonic() - started < 200


def test_worker_heartbeats_keep_a_long_training_run_alive(ray_local, catalog, tmp_path):
    """A stall timeout shorter than the whole run but longer than a step: the run must finish,
    which it can only do if the workers' beats reach the driver."""
    config, datasets = training_inputs(
        catalog,
        "resources.cpus_per_worker=0.5",
        "resources.stall_timeout_s=25",
        "train.epochs=12",
        "train.cnn_patience=100",
    )
    started = time.monotonic()
    result = fit(
        "custom_cnn",
        datasets,
        worker_config(config.resources, config.train),
        config.resources,
        str(tmp_path / "ray_train"),
        "alive",
    )
    assert result.error is None and time.monotonic() - started > 25


def test_the_watchdog_ends_a_scoring_run_stuck_on_a_read(ray_local, color_artifact, tmp_path):
    """An image that never finishes reading (a FIFO nobody writes, like a hung network mount)."""
    from pipeline.score.driver import prepare_scoring, score

    fifo = tmp_path / "stuck.png"
    os.mkfifo(fifo)
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(f"image_uri\n{fifo}\n")
    config = load_config(None, ["resources.stall_timeout_s=20"])
    plan = prepare_scoring(str(manifest), color_artifact, str(tmp_path / "out"), config)
    try:
        with pytest.raises(StalledError, match=r"scoring run .* made no progress"):
            score(plan)
    finally:
        try:  # give the stuck decode task an end of file, if it is still reading
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
