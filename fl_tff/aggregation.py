"""Model-update aggregators by name: the mean, TFF's clipping and zeroing, and our robust ones.

Coordinate-wise median and trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates") are ours: TFF has no such factory. They must see
every client update at the server (no secure aggregation), so they gather the updates
(`fl_tff.robust.gathered`) and reduce them there; so do Krum, Multi-Krum, Bulyan and RFA, each in
its own module under `fl_tff.robust`. They ignore client weights.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.robust import bulyan, gathered, krum, rfa


def coordinate_median(stacked: tf.Tensor) -> tf.Tensor:
    """Median over axis 0 (mean of the two middle values for an even count)."""
    s = tf.sort(stacked, axis=0)
    n = tf.shape(s)[0]
    return (tf.gather(s, (n - 1) // 2) + tf.gather(s, n // 2)) / 2


def trimmed_mean(trim_fraction: float) -> Callable[[tf.Tensor], tf.Tensor]:
    """Mean over axis 0 after dropping the floor(trim_fraction * n) largest and smallest values."""
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f'trim_fraction must be in [0, 0.5), got {trim_fraction}')

    def reduce(stacked: tf.Tensor) -> tf.Tensor:
        s = tf.sort(stacked, axis=0)
        n = tf.shape(s)[0]
        k = tf.cast(tf.floor(trim_fraction * tf.cast(n, tf.float32)), tf.int32)
        return tf.reduce_mean(s[k:n - k], axis=0)

    return reduce


def mean_factory(uniform: bool, value_sum_factory=None,
                 weight_sum_factory=None) -> tff.aggregators.AggregationFactory:
    """The mean of client values: unweighted (`uniform`) or weighted by the clients' weights,
    summing values (and weights, or counts) with the given factories (default: plain sums)."""
    if uniform:
        return tff.aggregators.UnweightedMeanFactory(value_sum_factory=value_sum_factory,
                                                     count_sum_factory=weight_sum_factory)
    return tff.aggregators.MeanFactory(value_sum_factory=value_sum_factory,
                                       weight_sum_factory=weight_sum_factory)


def _robust(build, *capabilities: str, params: tuple[options.Param, ...] = ()):
    """An aggregator hook `(config, selection, uniform, max_weight) -> factory` over `build`."""
    def hook(config, selection, uniform, max_weight):
        del selection, max_weight
        return build(uniform, **{p.name: getattr(config, p.name) for p in params})
    return dict(aggregator=hook, params=params, provides=frozenset(capabilities))


_CLIP_NORM = options.Param('clip_norm', 1.0, 'L2 norm each update is clipped to.', minimum=0.0,
                           min_open=True)
_ZEROING_NORM = options.Param('zeroing_norm', 10.0, 'Updates with a larger L2 norm are zeroed.',
                              minimum=0.0, min_open=True)
_TRIM_FRACTION = options.Param('trim_fraction', 0.1, 'Fraction trimmed at each end.', minimum=0.0,
                               maximum=0.5, max_open=True)

AGGREGATORS = options.Registry('aggregator', 'Aggregation of client updates.', [
    options.Option('mean', 'weighted (or, with uniform weighting, unweighted) mean',
                   **_robust(lambda uniform: mean_factory(uniform))),
    options.Option('clip', 'each update clipped to L2 norm --clip_norm, then the mean',
                   **_robust(lambda uniform, clip_norm: tff.aggregators.clipping_factory(
                       clip_norm, mean_factory(uniform)), options.REPLACES_MEAN,
                       params=(_CLIP_NORM,))),
    options.Option('zero', 'updates above L2 norm --zeroing_norm zeroed, then the mean',
                   **_robust(lambda uniform, zeroing_norm: tff.aggregators.zeroing_factory(
                       zeroing_norm, mean_factory(uniform), norm_order=2.0),
                       options.REPLACES_MEAN, params=(_ZEROING_NORM,))),
    options.Option('median', 'coordinate-wise median (unweighted; Yin et al. 2018)',
                   **_robust(lambda uniform: gathered.GatheredUpdatesFactory(coordinate_median),
                             options.REPLACES_MEAN, options.SEES_INDIVIDUAL_UPDATES)),
    options.Option('trimmed_mean', 'coordinate-wise trimmed mean (unweighted; Yin et al. 2018)',
                   **_robust(lambda uniform, trim_fraction: gathered.GatheredUpdatesFactory(
                       trimmed_mean(trim_fraction)), options.REPLACES_MEAN,
                       options.SEES_INDIVIDUAL_UPDATES, params=(_TRIM_FRACTION,))),
    krum.KRUM,
    krum.MULTI_KRUM,
    bulyan.OPTION,
    rfa.OPTION,
], default='mean')


def build_model_aggregator(name: str, *, uniform: bool = False,
                           **params: Any) -> tff.aggregators.AggregationFactory:
    """The aggregator called `name` (see `AGGREGATORS`) with its parameters (defaults for those
    not given), e.g. `build_model_aggregator('krum', byzantine_f=2)`.

    mean: weighted (or, with `uniform`, unweighted) mean. clip: each update's L2 norm clipped to
    `clip_norm`, then the mean. zero: updates with L2 norm above `zeroing_norm` replaced by zeros,
    then the mean. median / trimmed_mean: coordinate-wise, unweighted. krum, multikrum, bulyan,
    rfa: see `fl_tff.robust`.

    Raises:
      ValueError: An unknown name, a parameter it does not take, or one out of its range.
    """
    option = AGGREGATORS.get(name)
    declared = {p.name: p for p in option.params}
    unknown = set(params) - set(declared)
    if unknown:
        raise ValueError(f'--aggregator={name} takes no {", ".join(sorted(unknown))}')
    values = {n: params.get(n, p.default) for n, p in declared.items()}
    for p in option.params:
        problem = p.problem(values[p.name])
        if problem:
            raise ValueError(f'{p.name} {problem}')
    return option.aggregator(types.SimpleNamespace(**values), None, uniform, None)
