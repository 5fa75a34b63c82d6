"""The quiet console: which forwarded worker lines a person sees, the epoch line, and augmentation
tasks that never load TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.runtime import sort_worker_line
from pipeline import console
from tests.conftest import REPO

# Lines Ray forwarded from workers in a `make demo` before issue 16 (one of each kind).
TENSORFLOW_START_UP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796155855.845225   14883 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "I0000 00:00:1796155855.939366   14883 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "E0000 00:00:1796155861.002211   14883 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
DETAIL = [
    "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'phase': 'train', 'epoch': 1})",
    "INFO:tensorflow:Collective all_reduce tensors: 1 all_reduces, num_devices = 1, group_size = 2",
    "✔️  Dataset val_0357 execution finished in 0.05 seconds",
]
PROBLEMS = [
    "WARNING:tensorflow:5 out of the last 11 calls to <function predict> triggered tf.function retracing.",
    "2026-12-01 20:11:06,143 ERROR worker.py:12 -- the weights file is truncated",
    "Traceback (most recent call last):",
    "ConnectionError: Found multiple active Ray instances: {'192.0.2.2:34407', '192.0.2.2:39149'}.",
]


@pytest.mark.parametrize("line", TENSORFLOW_START_UP + DETAIL)
def test_start_up_lines_and_detail_go_to_the_log_file_only(line):
    assert sort_worker_line(line, verbose=False) == ("log", line)


@pytest.mark.parametrize("line", PROBLEMS)
def test_warnings_and_errors_reach_the_console(line):
    assert sort_worker_line(line, verbose=False) == ("warning", line)


def test_marked_lines_reach_the_console_unmarked_and_verbose_shows_everything_as_it_came():
    console_line = "custom_cnn train epoch 1/8: loss 0.5"
    assert sort_worker_line(console.MARK + console_line, verbose=False) == ("console", console_line)
    assert sort_worker_line(console.MARK + console_line, verbose=True) == ("console", console_line)
    for line in TENSORFLOW_START_UP + DETAIL + PROBLEMS:
        assert sort_worker_line(line, verbose=True) == ("log", line)


def test_the_epoch_line_says_model_phase_epoch_figures_and_time_left():
    row = {"loss": 0.51234, "accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.875, "seconds": 12.34}
    assert console.epoch_line("mobilenet_v2", "head", 2, 4, row, 24.68) == (
        "mobilenet_v2 head epoch 2/4: loss 0.5123 accuracy 0.8000 val_loss 0.4000 val_accuracy 0.8750 "
        "(12.3 s, at most ~25 s left for mobilenet_v2)"
    )
    assert console.epoch_line("custom_cnn", "train", 8, 8, row, 0.0).endswith("(12.3 s)")


def test_augmentation_tasks_never_load_tensorflow():
    """What a Ray Data augmentation task imports: the module of `augment_batch`, then the call."""
    script = (
        "import sys, numpy as np\n"
        "from pipeline.train.data import augment_batch\n"
        "images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)\n"
        "augment_batch({'image': images, 'label_index': np.arange(4)}, {}, seed=0)\n"
        "loaded = [name for name in ('tensorflow', 'keras') if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
