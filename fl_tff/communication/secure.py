"""Secure aggregation through TFF's secure-sum primitives.

Each client value is clipped to [-R, R], quantized to B-bit integers (deterministic rounding to
the nearest of 2^B levels), summed with `tff.aggregators.SecureSumFactory` (which moves it to
the server with `tff.federated_secure_sum_bitwidth`) and dequantized at the server. The client
count needed to dequantize is itself a secure sum of ones. So the server's only view of the
client values is their sum.

Simulation: open-source TFF computes the secure sum as a plain sum (no cryptography); fl_tff
guarantees the structure, which `tests/communication/test_secure.py` checks on the compiled
computation.

Error bound: rounding moves each value by at most Δ/2 with Δ = 2R / (2^B - 1), so the sum of n
clients is within nΔ/2 of the exact sum of the clipped values, and their mean within Δ/2.

Weighted means: TFF's `MeanFactory` multiplies each update by its client's weight before the
sum, so a range R would bound update × examples (weights of 100-200 on digits clipped ~7% of
values to ±1). Here clients first scale their weight to w / max_weight ≤ 1, so R bounds the
update itself; the mean Σ u·ŵ / Σ ŵ is unchanged, and its rounding error is at most
nΔ / (2 Σ ŵ). The fraction of values clipped to the range is reported each round
(`secure_clipped_fraction`, from a secure sum of per-client counts).
"""

from __future__ import annotations

import collections
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import aggregation, options
from fl_tff.communication import ledger

MIN_BITS, MAX_BITS = 1, 24  # The integer sum of up to 2^7 clients stays within int32 at 24 bits.


def quantization_step(bits: int, bound: float) -> float:
    """Δ = 2R / (2^B - 1): the distance between adjacent quantization levels."""
    return 2.0 * bound / (2 ** bits - 1)


class SecureQuantizedSumFactory(tff.aggregators.UnweightedAggregationFactory):
    """Sums float values securely after clipping to [-bound, bound] and B-bit quantization."""

    def __init__(self, bits: int, bound: float):
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f'bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}')
        if not bound > 0:
            raise ValueError(f'bound must be > 0, got {bound}')
        self.bits, self.bound = int(bits), float(bound)

    def create(self, value_type) -> tff.templates.AggregationProcess:
        specs = tff.types.type_to_tf_tensor_specs(value_type)
        int_type = tff.types.tensorflow_to_type(
            tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, tf.int32), specs))
        levels = 2 ** self.bits - 1
        bound, step = self.bound, quantization_step(self.bits, self.bound)
        value_sum = tff.aggregators.SecureSumFactory(levels, 0).create(int_type)
        count_sum = tff.aggregators.SecureSumFactory(1, 0).create(tff.TensorType(np.int32))
        num_values = int(sum(np.prod(s.shape) for s in tf.nest.flatten(specs)))
        clipped_sum = tff.aggregators.SecureSumFactory(num_values, 0).create(
            tff.TensorType(np.int32))

        @tff.tensorflow.computation(value_type)
        def quantize(value):
            return tf.nest.map_structure(
                lambda v: tf.cast(tf.round((tf.clip_by_value(v, -bound, bound) + bound) / step),
                                  tf.int32), value)

        @tff.tensorflow.computation(value_type)
        def count_clipped(value):
            return tf.add_n([tf.reduce_sum(tf.cast(tf.abs(v) > bound, tf.int32))
                             for v in tf.nest.flatten(value)])

        @tff.tensorflow.computation
        def one():
            return tf.constant(1, tf.int32)

        @tff.tensorflow.computation(int_type, np.int32)
        def dequantize(summed, count):
            return tf.nest.map_structure(
                lambda s, spec: tf.cast(tf.cast(s, tf.float64) * step - tf.cast(count, tf.float64)
                                        * bound, spec.dtype), summed, specs)

        @tff.tensorflow.computation(np.int32, np.int32)
        def clipped_fraction(clipped, count):
            return tf.math.divide_no_nan(tf.cast(clipped, tf.float32),
                                         tf.cast(count, tf.float32) * float(num_values))

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip((value_sum.initialize(), count_sum.initialize(),
                                      clipped_sum.initialize()))

        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            value_state, count_state, clipped_state = state
            summed = value_sum.next(value_state, tff.federated_map(quantize, value))
            count = count_sum.next(count_state, tff.federated_eval(one, tff.CLIENTS))
            clipped = clipped_sum.next(clipped_state, tff.federated_map(count_clipped, value))
            result = tff.federated_map(dequantize, (summed.result, count.result))
            measurements = tff.federated_zip(collections.OrderedDict(
                secure_sum=summed.measurements,
                secure_clipped_fraction=tff.federated_map(clipped_fraction,
                                                          (clipped.result, count.result))))
            return tff.templates.MeasuredProcessOutput(
                tff.federated_zip((summed.state, count.state, clipped.state)), result,
                measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)


class NormalizedWeightMeanFactory(tff.aggregators.WeightedAggregationFactory):
    """A weighted mean whose clients scale their weight by 1 / `max_weight` before the inner
    weighted mean multiplies their value by it: the value sum then sees value × ŵ with ŵ ≤ 1,
    so a range on it bounds the value itself. The mean is unchanged."""

    def __init__(self, inner: tff.aggregators.WeightedAggregationFactory, max_weight: float):
        if not max_weight > 0:
            raise ValueError(f'max_weight must be > 0, got {max_weight}')
        self._inner, self._scale = inner, 1.0 / float(max_weight)

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        inner = self._inner.create(value_type, weight_type)
        scale = self._scale

        @tff.tensorflow.computation(weight_type)
        def normalize(weight):
            return weight * tf.cast(scale, weight.dtype)

        @tff.federated_computation(inner.initialize.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
            return inner.next(state, value, tff.federated_map(normalize, weight))

        return tff.templates.AggregationProcess(inner.initialize, next_fn)


def build_secure_mean(bits: int, bound: float, *, uniform: bool,
                      max_weight: Optional[float] = None) -> tff.aggregators.AggregationFactory:
    """The (weighted) mean whose client values and weights reach the server only by secure sums.

    Args:
      bits: Bits per quantized value.
      bound: Each value (each update coordinate) is clipped to [-bound, bound].
      uniform: Unweighted mean (the client count is a secure sum too).
      max_weight: The largest weight a client can have (examples x epochs); weighted clients
        send update x weight / max_weight, and their normalized weights are summed in [0, 1].

    Returns:
      An aggregation factory (unweighted when `uniform`, else weighted).

    Raises:
      ValueError: A weighted mean without `max_weight`.
    """
    if uniform:
        return aggregation.mean_factory(True, SecureQuantizedSumFactory(bits, bound),
                                        tff.aggregators.SecureSumFactory(1, 0))
    if max_weight is None:
        raise ValueError('a weighted secure mean needs max_weight (the largest client weight)')
    mean = aggregation.mean_factory(False, SecureQuantizedSumFactory(bits, bound),
                                    tff.aggregators.SecureSumFactory(1.0, 0.0))
    return NormalizedWeightMeanFactory(mean, max_weight)


def _check(config, selection: options.Selection) -> None:
    """The cohort's sum of B-bit integers must fit in int32 (a cohort without a fixed size, or
    an asynchronous buffer, can be as large as the population); a modular secure sum wraps
    around instead."""
    if selection.has(options.MODULAR_SECURE_SUM):
        return
    fixed = selection.has(options.FIXED_COHORT) and not selection.has(options.ASYNCHRONOUS)
    cohort = (int(math.ceil(config.clients_per_round * (1 + config.over_selection)))
              if fixed else config.num_clients)
    if cohort * (2 ** config.secure_bits - 1) >= 2 ** 31:
        raise options.OptionError('secure_bits', f'{config.secure_bits} bits x up to {cohort} '
                                  'clients per round overflows the 32-bit secure sum; use at most '
                                  f'{int(math.log2(2 ** 31 / cohort))} bits')


SECURE_AGGREGATION = options.Registry(
    'secure_agg', 'Secure aggregation: updates (and weights) reach the server only through TFF '
    'secure sums, after clipping to +-secure_range and quantizing to secure_bits.', [
        options.Option('off', 'updates are summed in the clear'),
        options.Option(
            'on', 'clip to +-R, quantize to B bits, TFF secure sums',
            params=(options.Param('secure_bits', 16, 'Bits per value of the secure sum.',
                                  minimum=MIN_BITS, maximum=MAX_BITS),
                    options.Param('secure_range', 1.0, 'Each update value is clipped to [-R, R] '
                                  'before quantization (with example weighting clients scale '
                                  'their weight to <= 1 first; with user-level DP its clip norm '
                                  'is used); metrics report the fraction clipped '
                                  '(secure_clipped_fraction).', minimum=0.0, min_open=True)),
            provides={options.SECURE_SUM},
            excludes={options.REPLACES_MEAN: 'it must see each update, and with --secure_agg the '
                                             'server sees only their sum: use the mean'},
            check=_check,
            aggregator=lambda config, selection, uniform, max_weight: build_secure_mean(
                config.secure_bits, config.secure_range, uniform=uniform, max_weight=max_weight),
            uplink_encoding=lambda config, weighted: ledger.secure_encoding(config.secure_bits,
                                                                            weighted)),
    ], default=False, boolean=True)
