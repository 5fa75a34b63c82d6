"""The GPU path is one flag: check the configuration it produces (no GPU on CI machines)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from jobs.config import load_config
from models.spec import InputSpec
from pipeline.engines import choose_engine, onnx_cuda_available
from pipeline.records import ModelCard, OnnxExport
from pipeline.resources import ClusterShape, actor_count, decode_in_actors
from pipeline.tf_runtime import configure_tensorflow
from pipeline.train.trainer import scaling_config
from tests.conftest import REPO


def test_gpu_flag_gives_each_training_worker_one_gpu():
    config = load_config("jobs/configs/cluster.yaml", [], **{"resources.gpu": True, "resources.workers": 4})
    scaling = scaling_config(config.resources)
    assert scaling.num_workers == 4 and scaling.use_gpu
    assert scaling.resources_per_worker == {"CPU": 4, "GPU": 1}


def test_cpu_workers_ask_for_no_gpu():
    scaling = scaling_config(load_config("jobs/configs/local.yaml").resources)
    assert not scaling.use_gpu and "GPU" not in scaling.resources_per_worker
    assert scaling.resources_per_worker["CPU"] == 0.5  # 2 workers must leave CPU for Ray Data


def test_gpu_scoring_decodes_in_separate_tasks_and_cpu_actors_fuse_it():
    assert not decode_in_actors(load_config("jobs/configs/cluster.yaml", [], **{"resources.gpu": True}).resources, 2)
    assert decode_in_actors(load_config("jobs/configs/cluster.yaml").resources, 2)
    assert not decode_in_actors(load_config(None, ["resources.actors=1"]).resources, 1)


def shape(cpus: float, gpus: float = 0.0) -> ClusterShape:
    return ClusterShape(cpus=cpus, gpus=gpus, largest_node_cpus=cpus, can_grow=False)


def test_auto_actors_are_one_per_gpu_or_one_per_inference_thread_budget():
    auto = load_config("jobs/configs/local.yaml").resources
    assert auto.actors == "auto"
    assert actor_count(auto, 1, shape(2.0)) == 2
    assert actor_count(auto, 1, shape(8.0)) == 8
    assert actor_count(auto, 2, shape(8.0)) == 4
    assert actor_count(auto, 4, shape(2.0)) == 1
    gpu = load_config("jobs/configs/local.yaml", [], **{"resources.gpu": True}).resources
    assert actor_count(gpu, 1, shape(16.0, 4.0)) == 4
    assert actor_count(load_config(None, ["resources.actors=3"]).resources, 1, shape(8.0)) == 3


def test_auto_engine_on_gpu_is_onnx_only_with_its_cuda_provider():
    card = ModelCard("custom_cnn", "v", ("a", "b"), InputSpec(32), onnx=OnnxExport(file="model.onnx"))
    assert choose_engine("auto", card, gpu=False) == "onnx"
    assert choose_engine("auto", card, gpu=True) == ("onnx" if onnx_cuda_available() else "keras")
    refused = dataclasses.replace(card, onnx=OnnxExport(file=None, reason="outputs differ"))
    assert choose_engine("auto", refused, gpu=True) == "keras"
    assert choose_engine("auto", refused, gpu=False) == "keras"


def test_tensorflow_configuration_runs_without_a_gpu_and_sizes_the_thread_pools():
    """In a fresh process (TensorFlow fixes its pools at first use): the worker's CPU share sets
    the pools, and asking for GPU memory growth with no GPU visible is not an error."""
    code = (
        "from pipeline.tf_runtime import configure_tensorflow; import tensorflow as tf; "
        "configure_tensorflow(3, gpu=True); "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads(), len(tf.config.list_physical_devices('GPU')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["3", "2", "0"]


@pytest.mark.gpu
def test_memory_growth_is_on_for_visible_gpus():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        pytest.skip("no GPU visible")
    configure_tensorflow(1, gpu=True)
    assert all(tf.config.experimental.get_memory_growth(gpu) for gpu in gpus)
