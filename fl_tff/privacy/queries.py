"""A Gaussian sum query whose noise is reproducible from the run's seed.

TF Privacy's `GaussianSumQuery` draws its noise from TF's unseeded global generator, so two runs
with the same flags differ. This subclass keeps its clipping and DP event and only replaces the
draw with stateless normal noise keyed by (seed, release number, tensor index): every round
gets fresh noise, and a rerun gets the same noise.
"""

from __future__ import annotations

import collections

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
    """`tfp.GaussianSumQuery` (clip each record's global L2 norm to C, sum, add N(0, stddev²))
    with stateless noise; the global state also carries the seed `[seed, release]`."""

    _GlobalState = collections.namedtuple('_GlobalState', ['l2_norm_clip', 'stddev', 'seed'])

    def __init__(self, l2_norm_clip: float, stddev: float, seed: int):
        super().__init__(l2_norm_clip, stddev)
        self._seed = int(seed)

    def make_global_state(self, l2_norm_clip, stddev, seed=None):
        seed = tf.constant([self._seed, 0], tf.int64) if seed is None else seed
        return self._GlobalState(tf.cast(l2_norm_clip, tf.float32), tf.cast(stddev, tf.float32), seed)

    def initial_global_state(self):
        return self.make_global_state(self._l2_norm_clip, self._stddev)

    def get_noised_result(self, sample_state, global_state):
        flat = tf.nest.flatten(sample_state)
        noised = [
            v + tf.random.stateless_normal(
                tf.shape(v), seed=tf.random.experimental.stateless_fold_in(global_state.seed, i),
                stddev=tf.cast(global_state.stddev, v.dtype), dtype=v.dtype)
            for i, v in enumerate(flat)]
        next_state = global_state._replace(
            seed=global_state.seed + tf.constant([0, 1], tf.int64))
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return tf.nest.pack_sequence_as(sample_state, noised), next_state, event
