"""Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium").

From n updates with up to f Byzantine (n >= 4f + 3): select theta = n - 2f updates by Krum
repeatedly (each round's Krum winner among those left is moved to the selection), then, for
every coordinate, average the beta = theta - 2f selected values closest to the coordinate's
median. When dropouts leave fewer clients, theta and beta shrink but stay >= 1.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from fl_tff import options
from fl_tff.aggregators.robust import gathered


def bulyan(matrix: tf.Tensor, f: int) -> tf.Tensor:
    """Bulyan's aggregate of the rows of `matrix`."""
    n = tf.shape(matrix)[0]
    inf = tf.constant(float('inf'), tf.float64)
    d2 = tf.linalg.set_diag(gathered.squared_distances(matrix), tf.fill([n], inf))
    theta = tf.maximum(n - 2 * f, 1)

    def pick(i, remaining, order):
        # Krum among the remaining rows: neighbours are remaining rows only.
        left = tf.reduce_sum(tf.cast(remaining, tf.int32))
        k = tf.maximum(left - f - 2, 1)
        masked = tf.where(remaining[tf.newaxis, :], d2, inf)
        scores = tf.reduce_sum(tf.sort(masked, axis=1)[:, :k], axis=1)
        scores = tf.where(remaining, scores, inf)
        best = tf.argmin(scores, output_type=tf.int32)
        return (i + 1, tf.tensor_scatter_nd_update(remaining, [[best]], [False]),
                order.write(i, best))

    _, _, order = tf.while_loop(
        lambda i, remaining, order: i < theta, pick,
        (tf.constant(0), tf.ones([n], tf.bool), tf.TensorArray(tf.int32, size=theta)))
    selected = tf.gather(matrix, order.stack())
    beta = tf.maximum(theta - 2 * f, 1)
    s = tf.sort(selected, axis=0)
    median = (tf.gather(s, (theta - 1) // 2) + tf.gather(s, theta // 2)) / 2
    # Per coordinate (a row of the transposes), the beta values closest to the median.
    closest = tf.argsort(tf.transpose(tf.abs(selected - median)), axis=1, stable=True)[:, :beta]
    return tf.reduce_mean(tf.gather(tf.transpose(selected), closest, batch_dims=1), axis=1)


def _check(config, selection) -> None:
    del selection
    gathered.check_cohort(config, 'byzantine_f', lambda f: 4 * f + 3, 'n >= 4f + 3')


OPTION = options.Option(
    'bulyan', 'Bulyan (El Mhamdi et al. 2018): n - 2f updates chosen by repeated Krum, then per '
    'coordinate the mean of the n - 4f values closest to the median',
    aggregator_layer=gathered.layer(lambda byzantine_f: functools.partial(bulyan, f=byzantine_f)),
    params=(gathered.BYZANTINE_F,), provides=gathered.CAPABILITIES,
    excludes=gathered.COORDINATE_WISE, check=_check)
