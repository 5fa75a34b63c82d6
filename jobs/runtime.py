"""Process set-up shared by the jobs: logging, Ray, exit codes."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import ray

from jobs.config import load_config
from pipeline import storage
from pipeline.config import JobConfig, ResourcesConfig

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def on_remote_cluster() -> bool:
    """True when the job runs against a cluster someone else started (RAY_ADDRESS, or `ray job
    submit`, whose driver runs on the head node with the job's working directory as a copy)."""
    address = os.environ.get("RAY_ADDRESS", "")
    return bool(address) and address not in ("local",)


def check_paths_usable(**uris: str) -> None:
    """Relative paths name the submitting machine's disk, which a cluster job cannot see (its
    working directory is a temporary copy), so they are refused there rather than guessed at.

    Raises:
        ValueError: A relative path while running on a remote cluster.
    """
    if not on_remote_cluster() or os.environ.get("CATALOG_CLASSIFIER_ALLOW_RELATIVE") == "1":
        return
    for flag, uri in uris.items():
        if uri and not storage.is_remote(uri) and not uri.startswith("file://") and not os.path.isabs(uri):
            raise ValueError(f"--{flag.replace('_', '-')} {uri!r} is a relative path, which a Ray cluster "
                             "job cannot resolve; use an s3:// URI or an absolute path on shared storage")


def resolve_config(config_path: str | None, overrides: list[str], paths: dict[str, str],
                   flags: dict[str, Any]) -> JobConfig:
    """What both jobs do before any work: refuse unusable paths, then preset + flags + --set."""
    check_paths_usable(**paths, config=config_path or "")
    config = load_config(config_path, overrides, **flags)
    logger.info("resolved config: %s", config.to_dict())
    return config


def init_ray(resources: ResourcesConfig) -> None:
    """Connects to RAY_ADDRESS when set, otherwise starts an embedded local Ray."""
    if ray.is_initialized():
        return
    if on_remote_cluster():
        ray.init(log_to_driver=True)
    else:
        # The dashboard stays on: Ray Train's placement-group cleaner queries the state API it serves.
        ray.init(num_cpus=resources.num_cpus, log_to_driver=True)
    logger.info("ray resources: %s", ray.cluster_resources())


def run(main_body: Callable[[], int]) -> int:
    """Runs a job body with the product's exit codes: 2 for bad input (ValueError), 1 otherwise."""
    try:
        return main_body()
    except ValueError as error:
        logger.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:
        logger.exception("job failed")
        return EXIT_FAILED
