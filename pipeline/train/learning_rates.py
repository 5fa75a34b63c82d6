"""Learning rates under data parallelism: scaled with the global batch, ramped up by a warm-up.

Each optimizer step averages the gradient over the global batch (`batch_size_per_worker ×
workers`), so 2 workers take half the steps per epoch of 1 worker at the same learning rate and
epoch budget, and trail it in accuracy. The linear scaling rule (Goyal et al. 2017, "Accurate,
Large Minibatch SGD") multiplies the learning rate by global batch / reference batch, so an epoch
moves the weights about as far as at the reference batch; a warm-up from the unscaled rate keeps
the first steps, taken from random or freshly unfrozen weights, from diverging at the larger rate.
It was chosen over fixing the global batch (per-worker batch = global / workers) because it keeps
`train.batch_size_per_worker` meaning what it says, so adding workers adds throughput.
"""

from __future__ import annotations

import math
from typing import Any


def scaled_learning_rate(base: float, global_batch_size: int, reference_batch_size: int, rule: str) -> float:
    """The learning rate for `global_batch_size` given one chosen for `reference_batch_size`.

    Args:
        base: The configured learning rate, right for `reference_batch_size`.
        rule: "linear" (base × global / reference) or "none" (base unchanged).
    """
    if rule == "none":
        return base
    if rule == "linear":
        return base * global_batch_size / reference_batch_size
    raise ValueError(f"train.learning_rate_scaling={rule!r} is invalid; allowed: linear, none")


def warmup_steps(train_images: int, global_batch_size: int, warmup_epochs: float) -> int:
    """Optimizer steps in `warmup_epochs` epochs (steps drop the last partial batch, as training does)."""
    steps_per_epoch = max(1, train_images // global_batch_size)
    return int(math.ceil(warmup_epochs * steps_per_epoch))


def learning_rate_at(step: int, base: float, peak: float, warmup: int) -> float:
    """The rate at optimizer step `step`: linear from `base` to `peak` over `warmup` steps, then `peak`."""
    if warmup <= 0 or step >= warmup:
        return peak
    return base + (peak - base) * step / warmup


def make_schedule(base: float, peak: float, warmup: int) -> Any:
    """`learning_rate_at` as a Keras schedule (a plain float when there is nothing to ramp)."""
    if warmup <= 0 or peak == base:
        return peak
    import keras

    # CosineDecay with alpha=1 never decays: it is only its linear warm-up from `base` to `peak`.
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base, decay_steps=1, alpha=1.0, warmup_target=peak, warmup_steps=warmup
    )
