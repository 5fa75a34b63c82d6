"""Launches one model's data-parallel training on Ray Train, under the stall watchdog."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from pipeline.config import ResourcesConfig
from pipeline.train.data import ordered_ingest
from pipeline.train.worker import WorkerConfig, train_loop_per_worker
from pipeline.watchdog import Watchdog, start_heartbeat

logger = logging.getLogger(__name__)


def scaling_config(resources: ResourcesConfig) -> ScalingConfig:
    """Ray Train workers from config: `--gpu` is the one switch that gives each worker one GPU."""
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.gpu:
        per_worker["GPU"] = 1
    return ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpu, resources_per_worker=per_worker)


def fit(
    model_name: str,
    datasets: dict[str, ray.data.Dataset],
    worker_config: WorkerConfig,
    resources: ResourcesConfig,
    storage_path: str,
    run_name: str,
) -> ray.train.Result:
    """Runs one model's data-parallel training; returns Ray's result (final checkpoint included).

    A rerun with the same `run_name` and `storage_path` resumes from the latest checkpoint. Workers
    beat a `Heartbeat` actor every few steps; no beat for `resources.stall_timeout_s` ends the run
    with `StalledError`.
    """
    scaling = scaling_config(resources)
    heartbeat, probe, stop_heartbeat = start_heartbeat()
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.replace(worker_config, heartbeat=heartbeat).to_dict(),
        scaling_config=scaling,
        datasets={"train": datasets["train"], "val": datasets["val"]},
        dataset_config=ordered_ingest(),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=worker_config.train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=worker_config.train.max_failures),
        ),
    )
    logger.info(
        "fitting %s with %d worker(s) × %g CPU%s",
        model_name,
        resources.workers,
        resources.cpus_per_worker,
        " + 1 GPU" if resources.gpu else "",
    )
    # Ray Train installs a SIGINT handler for its run and leaves it behind; a later Ctrl-C (or the
    # watchdog's interrupt) in this process would then abort a controller that no longer exists.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.getsignal(signal.SIGINT) if on_main_thread else None
    try:
        with Watchdog(f"training {model_name}", resources.stall_timeout_s, probe):
            return trainer.fit()
    finally:
        stop_heartbeat()
        if on_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
