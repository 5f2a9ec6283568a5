"""Losses for next-token prediction, where padding positions must not count."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


class MaskedSparseCategoricalCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy on logits averaged over the positions whose label is not in `masked_labels`.

    TFF's baselines average over padding too, which makes the loss depend on how much of a
    batch is padding; this one is the mean over real tokens (0 when a batch has none).
    """

    def __init__(self, masked_labels: Sequence[int] = (0,),
                 name: str = 'masked_sparse_categorical_crossentropy'):
        super().__init__(name=name)
        self.masked_labels = tuple(int(t) for t in masked_labels)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        per_token = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        mask = token_mask(y_true, self.masked_labels, per_token.dtype)
        if sample_weight is not None:
            mask *= tf.cast(sample_weight, mask.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(per_token * mask), tf.reduce_sum(mask))

    def call(self, y_true, y_pred):
        return self.__call__(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), 'masked_labels': self.masked_labels}


def token_mask(labels, masked_labels: Sequence[int], dtype=tf.float32):
    """1 where `labels` is not one of `masked_labels`, else 0 (TensorFlow)."""
    mask = tf.ones_like(labels, dtype)
    for token in masked_labels:
        mask *= tf.cast(tf.not_equal(labels, token), dtype)
    return mask


def numpy_mask(labels: np.ndarray, masked_labels: Sequence[int]) -> np.ndarray:
    """True where `labels` is not one of `masked_labels` (NumPy)."""
    return ~np.isin(labels, np.asarray(masked_labels, dtype=labels.dtype))


def per_example_loss(labels, logits, masked_labels: Sequence[int] = ()):
    """Cross-entropy of each example, shape [batch]: for sequences, the mean over its unmasked
    positions (0 for an all-padding example)."""
    labels = tf.cast(labels, tf.int32)
    loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    if loss.shape.rank == 1:
        return loss
    mask = token_mask(labels, masked_labels, loss.dtype)
    axes = list(range(1, loss.shape.rank))
    return tf.math.divide_no_nan(tf.reduce_sum(loss * mask, axes), tf.reduce_sum(mask, axes))
