"""Sizes Ray Train workers and scoring actors to the Ray cluster they run on, before any work.

Ray schedules by logical resources and waits, silently and for ever, for a request that cannot be
met. Two such waits were real: 2 training workers × 1 CPU on a 2-CPU machine leave nothing for the
Ray Data tasks that decode and augment their batches, and 2 scoring actors × 1 CPU starve the
decode tasks that feed them. So each job's request is checked against the cluster first: a share
that does not fit is shrunk (and logged), and one that cannot fit at all is refused with the keys
to change. A cluster someone else runs may add nodes on demand (KubeRay's autoscaler), so there a
shortfall is logged and left to the autoscaler, with the stall watchdog as the backstop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

from pipeline.config import ResourcesConfig

logger = logging.getLogger(__name__)

# Ray Data's decode and augmentation tasks ask for one CPU each (their default), so a job must leave
# at least one CPU free for them, or its workers wait for batches that are never made.
DATA_TASK_CPUS = 1.0
# Below this share a worker or actor is too slow to be worth scheduling: refuse instead.
MIN_CPU_SHARE = 0.1


def on_remote_cluster() -> bool:
    """True when the job runs against a cluster someone else started (RAY_ADDRESS, which `ray job
    submit` also sets for its driver), false for the embedded local Ray."""
    address = os.environ.get("RAY_ADDRESS", "")
    return bool(address) and address != "local"


@dataclass(frozen=True)
class ClusterShape:
    """The resources a job can count on when it starts."""

    cpus: float
    gpus: float
    largest_node_cpus: float
    # An embedded Ray is this one machine: it never grows, so a shortfall is final.
    can_grow: bool

    @classmethod
    def current(cls) -> ClusterShape:
        """Reads the running Ray cluster (alive nodes only)."""
        import ray

        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
        return cls(
            cpus=sum(node.get("CPU", 0.0) for node in nodes),
            gpus=sum(node.get("GPU", 0.0) for node in nodes),
            largest_node_cpus=max((node.get("CPU", 0.0) for node in nodes), default=0.0),
            can_grow=on_remote_cluster(),
        )


def _floor_share(cpus: float, count: int) -> float:
    """A CPU share that fits `count` times in `cpus`, rounded down to a twentieth."""
    return math.floor(cpus / count * 20) / 20


def _shortfall(message: str, cluster: ClusterShape) -> None:
    if not cluster.can_grow:
        raise ValueError(message)
    logger.warning(
        "%s; waiting for the cluster to add nodes (resources.stall_timeout_s ends the run if none come)", message
    )


def _fitted_share(
    count: int, noun: str, key: str, share: float, budget: float, cluster: ClusterShape, refusal: str
) -> float:
    """`share` CPUs for each of `count` workers or actors (`noun`, configured as `resources.<key>`),
    shrunk (to a twentieth) until they fit `budget` and one node, and logged when shrunk; unchanged
    when they already fit, or when nothing fits (`refusal`)."""
    if count * share <= budget and share <= cluster.largest_node_cpus:
        return share
    fitted = min(_floor_share(budget, count), _floor_share(cluster.largest_node_cpus, 1))
    if fitted < MIN_CPU_SHARE:
        _shortfall(refusal, cluster)
        return share
    logger.warning(
        "resources.%s=%g × %d %ss do not fit the %g-CPU Ray cluster beside the Ray Data tasks they need "
        "(a silent hang); using %g per %s. Set resources.%s yourself to choose.",
        key,
        share,
        count,
        noun,
        cluster.cpus,
        fitted,
        noun,
        key,
    )
    return fitted


def fit_training(resources: ResourcesConfig, cluster: ClusterShape) -> ResourcesConfig:
    """Ray Train's request, shrunk to leave a CPU for the data tasks that feed it.

    Raises:
        ValueError: On a cluster that cannot grow, workers that cannot be placed at all.
    """
    workers = resources.workers
    if resources.gpu and cluster.gpus < workers:
        _shortfall(
            f"--workers {workers} --gpu asks for {workers} GPUs but the Ray cluster has "
            f"{cluster.gpus:g}; lower --workers (resources.workers) or drop --gpu",
            cluster,
        )
    budget = min(cluster.cpus - DATA_TASK_CPUS, workers * cluster.largest_node_cpus)
    refusal = (
        f"{workers} training workers × resources.cpus_per_worker={resources.cpus_per_worker:g} "
        f"do not fit a Ray cluster of {cluster.cpus:g} CPUs with {DATA_TASK_CPUS:g} left for "
        "Ray Data; lower --workers (resources.workers) or run on more CPUs"
    )
    share = _fitted_share(workers, "worker", "cpus_per_worker", resources.cpus_per_worker, budget, cluster, refusal)
    return dataclasses.replace(resources, cpus_per_worker=share)


def actor_count(resources: ResourcesConfig, threads_per_actor: int, cluster: ClusterShape) -> int:
    """`resources.actors`, with "auto" resolved: one actor per GPU with `gpu`, else one per
    `threads_per_actor` CPUs."""
    if resources.actors != "auto":
        return int(resources.actors)
    if resources.gpu:
        return max(1, int(cluster.gpus))
    return max(1, int(cluster.cpus // max(1, threads_per_actor)))


def decode_in_actors(resources: ResourcesConfig, actors: int) -> bool:
    """Several CPU actors decode their own images (decode tasks then ask for exactly the actors'
    CPUs, so Ray Data fuses them in); one actor or GPU actors get separate decode tasks that
    overlap their work."""
    return not resources.gpu and actors > 1


def fit_scoring(resources: ResourcesConfig, threads_per_actor: int, cluster: ClusterShape) -> ResourcesConfig:
    """The scoring request with `actors` resolved to a number and each actor's CPUs shrunk so that
    the actors, and the decode tasks when they run apart, fit the cluster.

    Raises:
        ValueError: On a cluster that cannot grow, actors that cannot be placed at all.
    """
    actors = actor_count(resources, threads_per_actor, cluster)
    if resources.gpu and cluster.gpus < actors:
        _shortfall(
            f"{actors} GPU scoring actors but the Ray cluster has {cluster.gpus:g} GPUs; "
            "lower --actors (resources.actors) or drop --gpu",
            cluster,
        )
    budget = cluster.cpus - (0 if decode_in_actors(resources, actors) else DATA_TASK_CPUS)
    budget = min(budget, actors * cluster.largest_node_cpus)
    refusal = (
        f"{actors} scoring actors × resources.cpus_per_actor={resources.cpus_per_actor:g} do not "
        f"fit a Ray cluster of {cluster.cpus:g} CPUs; lower --actors (resources.actors)"
    )
    share = _fitted_share(actors, "actor", "cpus_per_actor", resources.cpus_per_actor, budget, cluster, refusal)
    return dataclasses.replace(resources, actors=actors, cpus_per_actor=share)
