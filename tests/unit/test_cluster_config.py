"""Cluster runs fail in seconds here, not in the slow tier: every documented command resolves its
config as a cluster driver would, presets resolve from anywhere, resources are fitted to the
cluster, and RAY_ADDRESS means what the README says."""

from __future__ import annotations

import importlib
import os
import socket

import pytest

from jobs import runtime
from jobs.config import load_config, preset_names, read_preset
from pipeline.config import ResourcesConfig
from pipeline.resources import ClusterShape, fit_scoring, fit_training
from tests import documented

# What `ray job submit` gives its driver: the cluster's GCS address.
SUBMITTED_DRIVER_ADDRESS = "10.0.0.5:6379"


def documented_argvs() -> list[tuple[str, list[str]]]:
    readme = [
        ("README cluster: " + " ".join(argv[:3]), argv)
        for argv in map(documented.job_argv, documented.shell_commands(documented.readme_cluster_block()))
        if argv[:2] == ["python", "-m"]
    ]
    assert len(readme) == 2, "the README's cluster section should train and then score"
    return readme + documented.raw_k8s_entrypoints()


DOCUMENTED = documented_argvs()


@pytest.mark.parametrize("argv", [argv for _, argv in DOCUMENTED], ids=[where for where, _ in DOCUMENTED])
def test_documented_cluster_command_resolves_its_config_as_a_cluster_driver(argv, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", SUBMITTED_DRIVER_ADDRESS)
    monkeypatch.chdir(tmp_path)  # not the repository: a packaged preset must not need it
    module = importlib.import_module(argv[2])
    config = module.resolve(module.build_parser().parse_args(argv[3:]))
    assert config.model.image_size == 224  # the cluster preset, not the dataclass defaults


def test_presets_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert preset_names() == ["cluster", "local"]
    assert load_config("cluster").model.image_size == 224
    assert load_config("local").model.image_size == 64


def test_preset_files_and_relative_preset_paths_still_work(monkeypatch, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("model:\n  image_size: 48\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", SUBMITTED_DRIVER_ADDRESS)
    config = runtime.resolve_config("mine.yaml", [], {"catalog": "s3://b/c", "output": "s3://b/o"}, {})
    assert config.model.image_size == 48


def test_an_unknown_preset_names_the_presets():
    with pytest.raises(ValueError, match=r"'clustr' is neither a packaged preset \(cluster, local\)"):
        read_preset("clustr")


def test_relative_data_paths_are_still_refused_on_a_cluster(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", SUBMITTED_DRIVER_ADDRESS)
    with pytest.raises(ValueError, match="--catalog 'data/x' is a relative path"):
        runtime.resolve_config("cluster", [], {"catalog": "data/x", "output": "s3://b/o"}, {})


def shape(cpus: float, gpus: float = 0.0, largest: float | None = None, can_grow: bool = False) -> ClusterShape:
    return ClusterShape(cpus=cpus, gpus=gpus, largest_node_cpus=cpus if largest is None else largest, can_grow=can_grow)


def test_training_defaults_on_two_cores_leave_a_cpu_for_ray_data():
    fitted = fit_training(ResourcesConfig(workers=2), shape(2))
    assert fitted.cpus_per_worker == 0.5


def test_the_cluster_preset_on_a_small_cluster_is_shrunk_not_hung():
    preset = load_config("cluster").resources
    assert fit_training(preset, shape(2)).cpus_per_worker == 0.5
    assert fit_training(preset, shape(64, largest=16)) == preset  # fits: unchanged


def test_a_worker_larger_than_any_node_is_shrunk_to_a_node():
    fitted = fit_training(ResourcesConfig(workers=2, cpus_per_worker=8), shape(24, largest=4))
    assert fitted.cpus_per_worker == 4


def test_training_that_cannot_fit_an_embedded_ray_exits_with_the_keys_to_change():
    with pytest.raises(ValueError, match=r"lower --workers \(resources.workers\)"):
        fit_training(ResourcesConfig(workers=4), shape(1))
    with pytest.raises(ValueError, match="asks for 2 GPUs but the Ray cluster has 0"):
        fit_training(ResourcesConfig(workers=2, gpu=True), shape(8))


def test_a_remote_cluster_short_of_gpus_is_left_to_its_autoscaler(caplog):
    resources = ResourcesConfig(workers=2, gpu=True, cpus_per_worker=4)
    assert fit_training(resources, shape(0, can_grow=True)) == resources
    assert "waiting for the cluster to add nodes" in caplog.text


def test_scoring_actors_are_resolved_and_fitted():
    one_actor = fit_scoring(ResourcesConfig(), 2, shape(2))
    assert (one_actor.actors, one_actor.cpus_per_actor) == (1, 1.0)  # decode tasks get the other core
    fused = fit_scoring(load_config("cluster").resources, 1, shape(2))
    assert (fused.actors, fused.cpus_per_actor) == (2, 1.0)  # decoding runs inside the actors
    crowded = fit_scoring(ResourcesConfig(actors=1, cpus_per_actor=2), 2, shape(2))
    assert crowded.cpus_per_actor == 1.0  # one core left for the decode tasks
    gpu = fit_scoring(load_config("cluster", [], **{"resources.gpu": True}).resources, 1, shape(2, gpus=2))
    assert (gpu.actors, gpu.cpus_per_actor) == (2, 0.5)


def test_scoring_that_cannot_fit_an_embedded_ray_is_refused():
    with pytest.raises(ValueError, match=r"lower --actors \(resources.actors\)"):
        fit_scoring(ResourcesConfig(actors=1), 1, shape(1))


def test_without_ray_address_the_job_starts_its_own_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runtime.cluster_address() is None
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert runtime.cluster_address() is None


def test_a_ray_address_that_does_not_answer_fails_in_seconds_naming_it(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match=rf"RAY_ADDRESS='127.0.0.1:{port}' \(from the environment\).*does not answer"):
        runtime.cluster_address()


def test_a_dashboard_url_in_ray_address_is_explained(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://HEAD:8265")
    with pytest.raises(ValueError, match="dashboard address, which `ray job submit` uses"):
        runtime.cluster_address()


def test_a_listening_cluster_address_is_used(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", address)
        assert runtime.cluster_address() == address


def test_stall_timeout_is_validated():
    with pytest.raises(ValueError, match="resources.stall_timeout_s"):
        ResourcesConfig(stall_timeout_s=-1)
    assert os.environ.get("RAY_ADDRESS") in (None, "", "local")  # the suite itself runs embedded
