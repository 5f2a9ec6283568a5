"""Robust federated aggregation by the geometric median (RFA; Pillutla et al. 2022, "Robust
Aggregation for Federated Learning").

The geometric median minimizes the sum of Euclidean distances to the updates. It is computed
by the smoothed Weiszfeld algorithm: start from the mean, then --rfa_iterations times
v <- sum_i x_i / max(nu, |v - x_i|) / sum_i 1 / max(nu, |v - x_i|). Updates are unweighted
(the paper weights them by client size; our gathered aggregators ignore client weights).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from fl_tff import options
from fl_tff.aggregators.robust import gathered


def geometric_median(matrix: tf.Tensor, iterations: int = 3, nu: float = 1e-6) -> tf.Tensor:
    """The smoothed-Weiszfeld geometric median of the rows of `matrix`."""
    x = tf.cast(matrix, tf.float64)
    v = tf.reduce_mean(x, axis=0)
    for _ in range(iterations):
        distance = tf.norm(x - v[tf.newaxis], axis=1)
        w = 1.0 / tf.maximum(distance, nu)
        v = tf.reduce_sum(w[:, tf.newaxis] * x, axis=0) / tf.reduce_sum(w)
    return tf.cast(v, matrix.dtype)


OPTION = options.Option(
    'rfa', 'RFA (Pillutla et al. 2022): geometric median by --rfa_iterations smoothed Weiszfeld '
    'steps',
    aggregator_layer=gathered.layer(lambda rfa_iterations: functools.partial(
        geometric_median, iterations=rfa_iterations)),
    params=(options.Param('rfa_iterations', 3, 'RFA: Weiszfeld iterations.', minimum=1),),
    provides=gathered.CAPABILITIES)
