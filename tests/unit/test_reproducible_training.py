"""Issue 15's pure pieces: learning rates under data parallelism, the class-balanced selection
criterion, the per-class counts behind calibration, and seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import JobConfig, TrainConfig
from pipeline.train.data import augment_batch, batch_rng
from pipeline.train.learning_rates import learning_rate_at, make_schedule, scaled_learning_rate, warmup_steps
from pipeline.train.selection import balanced_loss, class_loss_sums, images_per_class, too_few_warnings
from pipeline.train.worker import WorkerConfig, plan_phases


def worker_config(workers: int, two_phase: bool = False, **train: object) -> WorkerConfig:
    return WorkerConfig(
        model_name="custom_cnn",
        num_classes=2,
        image_size=32,
        two_phase=two_phase,
        weights=None,
        dropout=0.5,
        class_weights=(1.0, 1.0),
        train=TrainConfig(**train),  # type: ignore[arg-type]
        workers=workers,
        cpus_per_worker=1.0,
        gpu=False,
    )


def test_the_learning_rate_scales_linearly_with_the_global_batch_and_not_at_all_when_told():
    assert scaled_learning_rate(1e-3, 64, 32, "linear") == pytest.approx(2e-3)
    assert scaled_learning_rate(1e-3, 16, 32, "linear") == pytest.approx(5e-4)
    assert scaled_learning_rate(1e-3, 64, 32, "none") == 1e-3
    with pytest.raises(ValueError, match="learning_rate_scaling"):
        scaled_learning_rate(1e-3, 64, 32, "sqrt")


def test_both_phases_of_a_two_worker_run_use_rates_scaled_from_the_single_worker_ones():
    one = {phase.name: phase.learning_rate for phase in plan_phases(worker_config(1, two_phase=True))}
    two = plan_phases(worker_config(2, two_phase=True))
    assert one == {"head": 1e-3, "fine_tune": 1e-5}  # 1 worker × 32: the configured rates
    assert {phase.name: phase.learning_rate for phase in two} == {"head": 2e-3, "fine_tune": 2e-5}
    assert {phase.name: phase.base_learning_rate for phase in two} == one
    fixed = plan_phases(worker_config(4, reference_batch_size=128))
    assert fixed[0].learning_rate == pytest.approx(1e-3)  # 4 × 32 is the reference batch itself
    unscaled = plan_phases(worker_config(2, learning_rate_scaling="none"))
    assert unscaled[0].learning_rate == 1e-3


def test_a_fixed_global_batch_splits_over_the_workers_and_keeps_the_configured_rates():
    """`train.global_batch_size`: 1, 2 and 4 workers take the same steps at the same rates."""
    for workers in (1, 2, 4):  # 64, not batch_size_per_worker's default of 32
        settings = worker_config(workers, two_phase=True, global_batch_size=64)
        assert settings.global_batch_size == 64 and settings.batch_size_per_worker == 64 // workers
        assert {phase.name: phase.learning_rate for phase in plan_phases(settings)} == {"head": 1e-3, "fine_tune": 1e-5}
    # An explicit reference batch still wins: the rates were chosen for 128, the batch is 64.
    halved = plan_phases(worker_config(2, global_batch_size=64, reference_batch_size=128))
    assert halved[0].learning_rate == pytest.approx(5e-4)
    assert worker_config(2).batch_size_per_worker == 32  # unset: batch_size_per_worker as given


def test_a_global_batch_the_workers_cannot_share_evenly_is_refused_naming_the_fix():
    with pytest.raises(
        ValueError, match=r"^train.global_batch_size=30 is invalid; allowed: a multiple of resources.workers=4"
    ):
        JobConfig.from_dict({"train": {"global_batch_size": 30}, "resources": {"workers": 4}})
    assert (
        JobConfig.from_dict({"train": {"global_batch_size": 32}, "resources": {"workers": 4}}).train.global_batch(4)
        == 32
    )


def test_the_warm_up_ramps_from_the_configured_rate_to_the_scaled_one_and_keras_agrees():
    assert warmup_steps(train_images=1000, global_batch_size=64, warmup_epochs=1.0) == 15
    assert warmup_steps(train_images=1000, global_batch_size=64, warmup_epochs=0.0) == 0
    assert warmup_steps(train_images=10, global_batch_size=64, warmup_epochs=2.0) == 2
    assert warmup_steps(train_images=1000, global_batch_size=64, warmup_epochs=0.5) == 8  # 7.5 rounds up
    assert [learning_rate_at(step, 1.0, 3.0, 4) for step in (0, 2, 4, 9)] == [1.0, 2.0, 3.0, 3.0]
    assert make_schedule(1e-3, 1e-3, 10) == 1e-3 and make_schedule(1e-3, 2e-3, 0) == 2e-3
    schedule = make_schedule(1e-3, 2e-3, 10)
    for step in (0, 3, 10, 50):
        assert float(schedule(step)) == pytest.approx(learning_rate_at(step, 1e-3, 2e-3, 10), rel=1e-5)


def test_the_balanced_loss_weighs_each_class_equally_whatever_its_count():
    labels = np.array([0] * 8 + [1] * 2)
    per_example = np.array([0.1] * 8 + [2.0] * 2)
    sums, counts = class_loss_sums(labels, per_example, num_classes=3)
    assert counts.tolist() == [8, 2, 0]
    assert balanced_loss(sums, counts) == pytest.approx((0.1 + 2.0) / 2)  # class 2 has no images: left out
    assert float(per_example.mean()) == pytest.approx(0.48)
    # An epoch that forgets the 2-image class wins on the plain mean and loses on the balanced one.
    forgetful = np.array([0.02] * 8 + [2.3] * 2)
    assert forgetful.mean() < per_example.mean()
    assert balanced_loss(*class_loss_sums(labels, forgetful, 3)) > balanced_loss(sums, counts)
    assert balanced_loss(np.zeros(2), np.zeros(2)) == float("inf")


def test_selection_and_its_minimum_are_config_keys_with_errors_that_name_them():
    assert TrainConfig().selection == "balanced_loss" and TrainConfig().min_fit_images_per_class == 10
    for key, value in (
        ("selection", "f1"),
        ("min_fit_images_per_class", 0),
        ("learning_rate_scaling", "sqrt"),
        ("warmup_epochs", -1),
        ("reference_batch_size", 0),
        ("global_batch_size", 0),
        ("seed", -1),
    ):
        with pytest.raises(ValueError, match=f"train.{key}="):
            TrainConfig(**{key: value})  # type: ignore[arg-type]


def test_the_training_seed_is_data_seed_unless_train_seed_is_set():
    assert JobConfig.from_dict({"data": {"seed": 7}}).training_seed == 7
    assert JobConfig.from_dict({"data": {"seed": 7}, "train": {"seed": 3}}).training_seed == 3


def test_calibration_counts_every_class_and_warns_for_those_below_the_minimum():
    counts = images_per_class(np.array([0, 0, 0, 1]), ("a", "b", "c"))
    assert counts == {"a": 3, "b": 1, "c": 0}  # a class with no validation image is counted too
    warnings = too_few_warnings(counts, minimum=3, fitted="the temperature was")
    assert len(warnings) == 2
    assert "1 validation image(s) of class 'b'" in warnings[0] and "0 validation image(s) of class 'c'" in warnings[1]
    assert "train.min_fit_images_per_class=3" in warnings[0]
    assert too_few_warnings(counts, minimum=0, fitted="x") == []


def test_augmentation_repeats_for_the_same_seed_and_batch_and_differs_otherwise():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    other = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    batch = {"image": images, "label_index": np.arange(4, dtype=np.int32)}
    first, again = augment_batch(batch, {}, seed=1), augment_batch(dict(batch), {}, seed=1)
    assert np.array_equal(first["image"], again["image"])
    assert not np.array_equal(first["image"], augment_batch(batch, {}, seed=2)["image"])
    assert batch_rng(images, 1).random() == batch_rng(images.copy(), 1).random()
    assert batch_rng(images, 1).random() != batch_rng(other, 1).random()
