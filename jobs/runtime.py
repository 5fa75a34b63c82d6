"""Process set-up shared by the jobs: logging, Ray, exit codes."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import ray

from jobs.config import load_config
from pipeline import storage
from pipeline.config import JobConfig, ResourcesConfig
from pipeline.resources import on_remote_cluster

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# How long a cluster named by RAY_ADDRESS has to accept a connection before the job gives up.
CONNECT_TIMEOUT_S = 5.0


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
            raise ValueError(
                f"--{flag.replace('_', '-')} {uri!r} is a relative path, which a Ray cluster "
                "job cannot resolve; use an s3:// URI or an absolute path on shared storage"
            )


def resolve_config(
    config_path: str | None, overrides: list[str], paths: dict[str, str], flags: dict[str, Any]
) -> JobConfig:
    """What both jobs do before any work: refuse unusable data paths, then preset + flags + --set.

    A relative `--config` is fine on a cluster: presets travel with the job (the `--working-dir`
    upload, the image's app directory), and `--config cluster` names the packaged preset anywhere.
    """
    check_paths_usable(**paths)
    config = load_config(config_path, overrides, **flags)
    logger.info("resolved config: %s", config.to_dict())
    return config


def cluster_address() -> str | None:
    """The Ray cluster this job must join, or None for an embedded local Ray.

    Only RAY_ADDRESS asks for a cluster (`ray job submit` sets it for its driver). Without it the
    job starts its own Ray, even when Ray's `ray_current_cluster` file names a cluster started
    earlier on this machine: that file outlives a stopped head, and joining it hangs.

    Raises:
        ValueError: RAY_ADDRESS names a cluster that does not answer within seconds, or a
            dashboard URL (that is for `ray job submit`, not for a driver).
    """
    if not on_remote_cluster():
        return None
    address = os.environ["RAY_ADDRESS"].strip()
    if address.startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address!r} (from the environment) is a dashboard address, which "
            "`ray job submit` uses; submit the job with `ray job submit -- python -m jobs...`, "
            "set RAY_ADDRESS to the cluster's GCS address (HOST:6379), or unset it to run on an "
            "embedded local Ray"
        )
    target = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        target = read_ray_address(None) or ""
        if not target:
            raise ValueError(
                "RAY_ADDRESS='auto' (from the environment) but no Ray cluster was started on this "
                "machine; start one with `ray start --head`, or unset RAY_ADDRESS"
            )
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise ValueError(
            f"RAY_ADDRESS={address!r} (from the environment) names a Ray cluster at {target!r} that "
            f"does not answer ({type(error).__name__}: {error}); start the cluster, fix RAY_ADDRESS, "
            "or unset it to run on an embedded local Ray"
        ) from error
    return address


def init_ray(resources: ResourcesConfig) -> None:
    """Joins the cluster RAY_ADDRESS names, after checking it answers, or starts an embedded Ray."""
    if ray.is_initialized():
        return
    address = cluster_address()
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard stays on: Ray Train's placement-group cleaner queries the state API it serves.
        ray.init(address="local", num_cpus=resources.num_cpus, log_to_driver=True)
    logger.info(
        "ray resources: %s (%s)",
        ray.cluster_resources(),
        f"cluster at RAY_ADDRESS={address}" if address else "embedded local Ray",
    )


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
