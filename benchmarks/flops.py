"""Floating-point operations of a client's training, counted from a Keras model's layers, so the
round-time benchmark can print the GFLOP/s each variant reaches beside the machine's matmul peak.

Counted by hand because TF's profiler counts the body of a recurrent loop once, not once per
time step (an LSTM over 80 characters would be undercounted 80-fold); tests check the count
against the profiler on models whose loops are unrolled.

A multiply-add is two operations; bias additions and an LSTM cell's additions and products
count one per value; activations, pooling, dropout, embedding lookups and the loss are left out
(under 1% of these models).
A training step costs three forward passes (the forward pass, then the gradients with respect
to the activations and to the weights), the usual estimate (Kaplan et al. 2020, "Scaling Laws
for Neural Language Models", section 2.1).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Layers that do no multiply-adds worth counting.
_FREE = (tf.keras.layers.InputLayer, tf.keras.layers.Flatten, tf.keras.layers.Dropout,
         tf.keras.layers.MaxPool2D, tf.keras.layers.Embedding)


def _positions(shape) -> int:
    """Values per example along the axes between the batch and the features."""
    return int(np.prod(shape[1:-1], dtype=np.int64)) if len(shape) > 2 else 1


def forward_flops_per_example(model: tf.keras.Model) -> int:
    """Operations of one example's forward pass through `model` (built, a Sequential of the
    layers fl_tff's models use).

    Raises:
      ValueError: A layer this count does not know.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, _FREE):
            continue
        if isinstance(layer, tf.keras.layers.Dense):
            inputs, units = layer.input_shape[-1], layer.units
            total += _positions(layer.output_shape) * (2 * inputs * units
                                                       + (units if layer.use_bias else 0))
        elif isinstance(layer, tf.keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            channels_in = layer.input_shape[-1]
            height, width, channels_out = layer.output_shape[1:]
            per_position = 2 * kh * kw * channels_in * channels_out + (
                channels_out if layer.use_bias else 0)
            total += height * width * per_position
        elif isinstance(layer, tf.keras.layers.RNN) and isinstance(
                layer.cell, tf.keras.layers.LSTMCell):
            steps, features = layer.input_shape[1], layer.input_shape[-1]
            units = layer.cell.units
            # Four gates, each the sum of a product with the input and one with the previous
            # output (plus the bias); then c = f * c + i * g and h = o * tanh(c).
            per_step = (2 * 4 * units * (features + units) + 4 * units
                        + (4 * units if layer.cell.use_bias else 0) + 4 * units)
            total += steps * per_step
        else:
            raise ValueError(f'no FLOP count for layer {layer.name!r} ({type(layer).__name__})')
    return total


def training_flops_per_example(model: tf.keras.Model) -> int:
    """Operations of one example's training step: three forward passes (module docstring)."""
    return 3 * forward_flops_per_example(model)
