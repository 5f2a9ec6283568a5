"""Model-update aggregators by name: the mean, TFF's clipping and zeroing, and our robust ones.

Coordinate-wise median and trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates") are ours: TFF has no such factory. They must see
every client update at the server (no secure aggregation), so they gather the updates
(`fl_tff.aggregators.robust.gathered`) and reduce them there; so do Krum, Multi-Krum, Bulyan and RFA, each in
its own module under `fl_tff.aggregators.robust`. They ignore client weights.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.aggregators import chain
from fl_tff import options
from fl_tff.aggregators.robust import bulyan, gathered, krum, rfa


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


_CLIP_NORM = options.Param('clip_norm', 1.0, 'L2 norm each update is clipped to.', minimum=0.0,
                           min_open=True)
_ZEROING_NORM = options.Param('zeroing_norm', 10.0, 'Updates with a larger L2 norm are zeroed.',
                              minimum=0.0, min_open=True)
_TRIM_FRACTION = options.Param('trim_fraction', 0.1, 'Fraction trimmed at each end.', minimum=0.0,
                               maximum=0.5, max_open=True)

AGGREGATORS = options.Registry('aggregator', 'Aggregation of client updates.', [
    options.Option('mean', 'weighted (or, with uniform weighting, unweighted) mean'
),
    options.Option('clip', 'each update clipped to L2 norm --clip_norm, then the mean',
                   params=(_CLIP_NORM,), provides={options.REPLACES_MEAN},
                   aggregator_layer=chain.Layer(chain.GUARD, lambda params, context, inner: (
                       tff.aggregators.clipping_factory(params['clip_norm'], inner)))),
    options.Option('zero', 'updates above L2 norm --zeroing_norm zeroed, then the mean',
                   params=(_ZEROING_NORM,), provides={options.REPLACES_MEAN},
                   aggregator_layer=chain.Layer(chain.GUARD, lambda params, context, inner: (
                       tff.aggregators.zeroing_factory(params['zeroing_norm'], inner,
                                                       norm_order=2.0)))),
    options.Option('median', 'coordinate-wise median (unweighted; Yin et al. 2018)',
                   provides=gathered.CAPABILITIES, excludes=gathered.COORDINATE_WISE,
                   aggregator_layer=gathered.layer(lambda: coordinate_median)),
    options.Option('trimmed_mean', 'coordinate-wise trimmed mean (unweighted; Yin et al. 2018)',
                   params=(_TRIM_FRACTION,), provides=gathered.CAPABILITIES,
                   excludes=gathered.COORDINATE_WISE, aggregator_layer=gathered.layer(trimmed_mean)),
    krum.KRUM,
    krum.MULTI_KRUM,
    bulyan.OPTION,
    rfa.OPTION,
], default='mean')


def build_model_aggregator(name: str, *, uniform: bool = False,
                           **params: Any) -> tff.aggregators.AggregationFactory:
    """The aggregator called `name` (see `AGGREGATORS`) alone in the chain, with its parameters
    (defaults for those not given), e.g. `build_model_aggregator('krum', byzantine_f=2)`.

    mean: weighted (or, with `uniform`, unweighted) mean. clip: each update's L2 norm clipped to
    `clip_norm`, then the mean. zero: updates with L2 norm above `zeroing_norm` replaced by zeros,
    then the mean. median / trimmed_mean: coordinate-wise, unweighted. krum, multikrum, bulyan,
    rfa: see `fl_tff.aggregators.robust`. With other options (DP, secure sums, compression) the run builds
    the chain from every selected option's layer (`fl_tff.experiment.build_model_aggregator`).

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
    layers = [(option.aggregator_layer, values)] if option.aggregator_layer else []
    return chain.build(layers, chain.Context(uniform=uniform))
