"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent").

With n updates of which up to f are Byzantine, each update's score is the sum of its squared
distances to its n - f - 2 nearest other updates. Krum keeps the update of the lowest score;
Multi-Krum averages the m lowest-scoring updates (m = n - f by default). With n > 2f + 2 the
honest updates outnumber the attackers in every neighbourhood that counts, so Krum picks an
honest update. When dropouts leave fewer clients, at least one neighbour is used.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from fl_tff import options
from fl_tff.aggregators.robust import gathered


def krum_scores(matrix: tf.Tensor, f: int) -> tf.Tensor:
    """Each row's Krum score (float64)."""
    n = tf.shape(matrix)[0]
    d2 = gathered.squared_distances(matrix)
    d2 = tf.linalg.set_diag(d2, tf.fill([n], tf.constant(float('inf'), tf.float64)))
    k = tf.maximum(n - f - 2, 1)
    nearest = tf.sort(d2, axis=1)[:, :k]
    return tf.reduce_sum(nearest, axis=1)


def multi_krum(matrix: tf.Tensor, f: int, m: int = 0) -> tf.Tensor:
    """The mean of the `m` rows with the lowest Krum scores (m = 0: n - f; m = 1: Krum)."""
    n = tf.shape(matrix)[0]
    count = tf.clip_by_value(n - f if m == 0 else tf.constant(m), 1, n)
    best = tf.argsort(krum_scores(matrix, f), stable=True)[:count]
    return tf.reduce_mean(tf.gather(matrix, best), axis=0)


def _check(config, selection) -> None:
    del selection
    gathered.check_cohort(config, 'byzantine_f', lambda f: 2 * f + 3, 'n > 2f + 2')


KRUM = options.Option(
    'krum', 'Krum (Blanchard et al. 2017): the update closest to its n - f - 2 nearest others',
    aggregator_layer=gathered.layer(lambda byzantine_f: functools.partial(
        multi_krum, f=byzantine_f, m=1)),
    params=(gathered.BYZANTINE_F,), provides=gathered.CAPABILITIES, check=_check)

def _check_multi_krum(config, selection) -> None:
    """Besides Krum's cohort: m <= n - f. Averaging more than the n - f updates Multi-Krum may
    trust lets attackers' updates in (at m = n it is the plain mean, and diverges with it)."""
    _check(config, selection)
    most = config.clients_per_round - config.byzantine_f
    if config.multikrum_m > most:
        raise options.OptionError(
            'multikrum_m', f'Multi-Krum averages at most n - f = {most} updates (--clients_per_'
            f'round={config.clients_per_round}, --byzantine_f={config.byzantine_f}), got '
            f'{config.multikrum_m}; choose a value in [1, {most}], or 0 for n - f')


MULTI_KRUM = options.Option(
    'multikrum', 'Multi-Krum (Blanchard et al. 2017): the mean of the --multikrum_m updates of '
    'lowest Krum score',
    aggregator_layer=gathered.layer(lambda byzantine_f, multikrum_m: functools.partial(
        multi_krum, f=byzantine_f, m=multikrum_m)),
    params=(gathered.BYZANTINE_F,
            options.Param('multikrum_m', 0, 'Multi-Krum: updates averaged (0: n - f).',
                          minimum=0)),
    provides=gathered.CAPABILITIES, check=_check_multi_krum)
