"""Class weights reach the loss; the weight vector is indexed by integer class id."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models import build_model
from pipeline.train.data import augment_batch, class_weight_vector, oversample
from pipeline.train.worker import weighted_loss


def gradients(class_weights):
    tf.keras.utils.set_random_seed(0)
    model = build_model("custom_cnn", num_classes=2, image_size=32, dropout=0.0)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)), tf.float32)
    labels = tf.constant([0, 0, 0, 0, 1, 1], tf.int32)
    with tf.GradientTape() as tape:
        loss = weighted_loss(labels, model(images, training=True), class_weights, global_batch_size=6)
    return loss, tape.gradient(loss, model.trainable_variables)


def test_class_weights_change_the_loss_and_the_gradient():
    plain_loss, plain = gradients([1.0, 1.0])
    weighted_loss_value, weighted = gradients([1.0, 5.0])
    assert float(weighted_loss_value) > float(plain_loss)
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(plain, weighted))


def test_balanced_weights_are_a_vector_by_class_index():
    weights = class_weight_vector(np.array([0] * 90 + [1] * 10), 2)
    assert weights.shape == (2,) and weights[1] == pytest.approx(5.0) and weights[0] == pytest.approx(100 / 180)
    with pytest.raises(ValueError, match="no training images"):
        class_weight_vector(np.array([0, 0, 2]), 3)


def test_oversampling_evens_out_classes():
    frame = pd.DataFrame({"label": ["a"] * 10 + ["b"] * 2, "image_uri": [str(i) for i in range(12)]})
    counts = oversample(frame, seed=0)["label"].value_counts()
    assert counts["a"] == counts["b"] == 10


def test_augmentation_changes_images_but_not_labels():
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(4, dtype=np.int32)
    out = augment_batch({"image": images, "label_index": labels}, {}, seed=0)
    assert out["image"].shape == images.shape and out["image"].dtype == np.uint8
    assert not np.array_equal(out["image"], images)
    assert np.array_equal(out["label_index"], labels)


def test_augmentation_without_any_transform_is_the_identity_and_a_flip_mirrors():
    from pipeline.augment import augment_images
    from pipeline.config import AugmentConfig

    images = np.random.default_rng(1).integers(0, 255, (6, 16, 24, 3), dtype=np.uint8)
    still = AugmentConfig(rotation_degrees=0, width_shift=0, height_shift=0, shear=0, zoom=0, horizontal_flip=False)
    assert np.array_equal(augment_images(images, still, np.random.default_rng(0)), images)
    flips = augment_images(images, dataclasses.replace(still, horizontal_flip=True), np.random.default_rng(0))
    mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flips, images)]
    kept = [np.array_equal(out, image) for out, image in zip(flips, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_a_shift_moves_the_picture_and_repeats_its_edge():
    from pipeline.augment import transform

    image = np.arange(25, dtype=np.uint8).reshape(1, 5, 5, 1)
    two_right = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, -2.0]]])  # read two columns to the left
    out = transform(image, two_right)[0, :, :, 0]
    assert np.array_equal(out[:, 2:], image[0, :, :3, 0])
    assert np.array_equal(out[:, 0], image[0, :, 0, 0]) and np.array_equal(out[:, 1], image[0, :, 0, 0])
