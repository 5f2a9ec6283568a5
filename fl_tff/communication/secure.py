"""Secure aggregation: each client's update (and weight) becomes one vector of B-bit integers,
the server learns only the sum of those vectors, and dequantizes it.

A client's vector (`Packing`, the one encoding every secure path uses):
* its update × ŵ, each value clipped to [-R, R] and quantized to the nearest of 2^B levels
  (deterministic rounding), where ŵ = w / max_weight ≤ 1 for a weighted mean (so R bounds the
  update itself, not update × examples) and ŵ = 1 for a uniform mean or a sum;
* ŵ quantized to B bits in [0, 1];
* the fraction of its values clipped to the range, quantized to B bits in [0, 1];
* a 1 (the server dequantizes with the client count).

The integer sum of the vectors is computed one of two ways, with the same vectors and the
same decoding, so the results are equal:
* structurally (`--secure_agg`): `tff.aggregators.SecureSumFactory` moves it to the server with
  `tff.federated_secure_sum_bitwidth`. Open-source TFF computes that as a plain sum (no
  cryptography): fl_tff guarantees the structure, which `tests/communication/test_secure.py`
  checks on the compiled computation;
* with masking (`--secagg`, `fl_tff.secagg.tff_round`): clients upload their vector plus the
  masks of the SecAgg protocol modulo 2^M, and the server removes the masks from their sum.

Error bound: rounding moves each value by at most Δ/2 with Δ = 2R / (2^B - 1), so the sum of n
clients' values is within nΔ/2 of the exact sum of the clipped values, and a uniform mean within
Δ/2. A weighted mean N/D also has its weight sum D rounded, by at most n / (2 (2^B - 1)), so it
is within (nΔ/2 + |N/D| n / (2 (2^B - 1))) / (D - n / (2 (2^B - 1))) of the exact one. The
fraction of values clipped to the range is reported each round (`secure_clipped_fraction`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.communication import ledger

MIN_BITS, MAX_BITS = 1, 24  # The integer sum of up to 2^7 clients stays within int32 at 24 bits.
SIDE_VALUES = 3  # Besides the update: the weight, the clipped fraction, the count.


def quantization_step(bits: int, bound: float) -> float:
    """Δ = 2R / (2^B - 1): the distance between adjacent quantization levels."""
    return 2.0 * bound / (2 ** bits - 1)


@dataclasses.dataclass(frozen=True)
class Packing:
    """A client's value and weight as one int32 vector of B-bit integers, and the server's
    decoding of the vectors' sum (see the module docstring). `encode` and `decode_*` are TF code
    for inside `tff.tensorflow.computation`s.

    Attributes:
      bits: B.
      bound: R: each value (× ŵ) is clipped to [-R, R].
      value_type: The TFF type of the value (a structure of float tensors).
      max_weight: The largest client weight; None: every client has ŵ = 1.
    """

    bits: int
    bound: float
    value_type: tff.Type
    max_weight: Optional[float] = None

    @property
    def levels(self) -> int:
        return 2 ** self.bits - 1

    @property
    def specs(self):
        return tff.types.type_to_tf_tensor_specs(self.value_type)

    @property
    def num_values(self) -> int:
        return int(sum(np.prod(s.shape) for s in tf.nest.flatten(self.specs)))

    @property
    def size(self) -> int:
        """The vector's length: the values plus `SIDE_VALUES`."""
        return self.num_values + SIDE_VALUES

    def encode(self, value, weight=None) -> tf.Tensor:
        """The client's int32 [size] vector."""
        bound, step, levels = self.bound, quantization_step(self.bits, self.bound), self.levels
        flat = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1])
                          for v in tf.nest.flatten(value)], 0)
        if self.max_weight is None:
            normalized = tf.constant(1.0, tf.float32)
        else:
            normalized = tf.clip_by_value(
                tf.cast(weight, tf.float32) * tf.constant(1.0 / self.max_weight, tf.float32),
                0.0, 1.0)
        scaled = flat * normalized
        # float32 can round (R + R) / Δ up to 2^B at large B: clamp to the top level.
        values = tf.minimum(tf.cast(tf.round((tf.clip_by_value(scaled, -bound, bound) + bound)
                                             / step), tf.int32), levels)
        clipped = tf.reduce_mean(tf.cast(tf.abs(scaled) > bound, tf.float32))
        side = tf.cast(tf.round(tf.stack([normalized * levels, clipped * levels])), tf.int32)
        return tf.concat([values, side, tf.ones([1], tf.int32)], 0)

    def _sums(self, total):
        total = tf.cast(total, tf.float64)
        count = total[-1]
        value_sum = (total[:self.num_values] * quantization_step(self.bits, self.bound)
                     - count * self.bound)
        weight_sum = total[self.num_values] / self.levels
        clipped = tf.cast(tf.math.divide_no_nan(total[self.num_values + 1] / self.levels,
                                                count), tf.float32)
        return value_sum, weight_sum, clipped

    def _unflatten(self, flat):
        specs = tf.nest.flatten(self.specs)
        parts = tf.split(flat, [int(np.prod(s.shape)) for s in specs])
        return tf.nest.pack_sequence_as(self.specs, [
            tf.cast(tf.reshape(p, s.shape), s.dtype) for p, s in zip(parts, specs)])

    def decode_sum(self, total):
        """(the sum of the clients' clipped values, the clipped fraction) from the integer sum."""
        value_sum, _, clipped = self._sums(total)
        return self._unflatten(value_sum), clipped

    def decode_mean(self, total):
        """(Σ value·ŵ / Σ ŵ, the clipped fraction) from the integer sum."""
        value_sum, weight_sum, clipped = self._sums(total)
        return self._unflatten(tf.math.divide_no_nan(value_sum, weight_sum)), clipped


@dataclasses.dataclass(frozen=True)
class PackedAggregation:
    """An aggregation whose only step from clients to the server is one sum of packed integer
    vectors: what a secure sum moves (structurally, `structural_process`) and what SecAgg masks
    (`fl_tff.secagg.tff_round`), with one encoding and one decoding for both.

    Attributes:
      packing: The vectors' layout.
      encode: TF function `(value, weight) -> int32 [size]`: a client's vector.
      decode: TF function `(integer sum as int64, state) -> (result, new state, clipped
        fraction)`: the server's release from the sum (state None when stateless).
      initial_state: TF function `() -> state` the server keeps across rounds (DP's noise
        seed), or None.
    """

    packing: Packing
    encode: Callable[[Any, Any], tf.Tensor]
    decode: Callable[[tf.Tensor, Any], tuple[Any, Any, tf.Tensor]]
    initial_state: Optional[Callable[[], Any]] = None


@runtime_checkable
class PackedAggregator(Protocol):
    """An aggregation factory whose processes sum packed vectors (what SecAgg can mask)."""

    def packed(self, value_type: tff.Type) -> PackedAggregation:
        """The client and server halves for `value_type` values."""


def packed_mean_or_sum(packing: Packing, mean: bool) -> PackedAggregation:
    """The stateless secure mean (Σ value·ŵ / Σ ŵ) or sum of `packing`'s values."""
    def decode(total, state):
        del state
        result, clipped = (packing.decode_mean if mean else packing.decode_sum)(total)
        return result, None, clipped
    return PackedAggregation(packing, packing.encode, decode)


def structural_process(aggregation: PackedAggregation,
                       weighted_next: bool) -> tff.templates.AggregationProcess:
    """The packed vectors summed by TFF's secure sum, then decoded. The process's state is the
    vector sum's, paired with the aggregation's own state when it keeps one."""
    packing = aggregation.packing
    value_type = packing.value_type
    int_type = tff.TensorType(np.int32, [packing.size])
    vector_sum = tff.aggregators.SecureSumFactory(packing.levels, 0).create(int_type)
    weight_type = tff.TensorType(np.float32)
    stateful = aggregation.initial_state is not None

    @tff.tensorflow.computation(value_type, weight_type)
    def encode(value, weight):
        return aggregation.encode(value, weight)

    @tff.tensorflow.computation
    def one():
        return tf.constant(1.0, tf.float32)

    if stateful:
        initial_state = tff.tensorflow.computation(aggregation.initial_state)

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip((tff.federated_eval(initial_state, tff.SERVER),
                                      vector_sum.initialize()))

        @tff.tensorflow.computation(int_type, initial_state.type_signature.result)
        def decode(total, state):
            return aggregation.decode(tf.cast(total, tf.int64), state)
    else:
        init_fn = vector_sum.initialize

        @tff.tensorflow.computation(int_type)
        def decode(total):
            result, _, clipped = aggregation.decode(tf.cast(total, tf.int64), None)
            return result, clipped

    def aggregate(state, value, weight):
        own, sum_state = (state[0], state[1]) if stateful else (None, state)
        summed = vector_sum.next(sum_state, tff.federated_map(encode, (value, weight)))
        if stateful:
            result, new_own, clipped = tff.federated_map(decode, (summed.result, own))
            new_state = tff.federated_zip((new_own, summed.state))
        else:
            (result, clipped), new_state = tff.federated_map(decode, summed.result), summed.state
        measurements = tff.federated_zip(collections.OrderedDict(
            secure_sum=summed.measurements, secure_clipped_fraction=clipped))
        return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

    if weighted_next:
        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
            return aggregate(state, value, weight)
    else:
        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            return aggregate(state, value, tff.federated_eval(one, tff.CLIENTS))
    return tff.templates.AggregationProcess(init_fn, next_fn)


class SecureQuantizedSumFactory(tff.aggregators.UnweightedAggregationFactory):
    """Sums float values securely after clipping to [-bound, bound] and B-bit quantization (the
    record sum of DP with secure aggregation)."""

    def __init__(self, bits: int, bound: float):
        _check_bits_and_bound(bits, bound)
        self.bits, self.bound = int(bits), float(bound)

    def packing(self, value_type) -> Packing:
        """How this sum encodes each client's value."""
        return Packing(self.bits, self.bound, value_type)

    def packed(self, value_type) -> PackedAggregation:
        return packed_mean_or_sum(self.packing(value_type), mean=False)

    def create(self, value_type) -> tff.templates.AggregationProcess:
        return structural_process(self.packed(value_type), weighted_next=False)


class SecureQuantizedMeanFactory(tff.aggregators.WeightedAggregationFactory):
    """The (weighted) mean of clipped, B-bit quantized values whose vectors reach the server
    only as a secure sum (`Packing`).

    Args:
      bits: B.
      bound: R.
      max_weight: The largest client weight (a weighted mean: ŵ = w / max_weight); None: a
        uniform mean (the weights are ignored).
    """

    def __init__(self, bits: int, bound: float, max_weight: Optional[float] = None):
        _check_bits_and_bound(bits, bound)
        if max_weight is not None and not max_weight > 0:
            raise ValueError(f'max_weight must be > 0, got {max_weight}')
        self.bits, self.bound = int(bits), float(bound)
        self.max_weight = None if max_weight is None else float(max_weight)

    def packing(self, value_type) -> Packing:
        """How this mean encodes each client's value and weight."""
        return Packing(self.bits, self.bound, value_type, self.max_weight)

    def packed(self, value_type) -> PackedAggregation:
        return packed_mean_or_sum(self.packing(value_type), mean=True)

    def create(self, value_type, weight_type=None) -> tff.templates.AggregationProcess:
        return structural_process(self.packed(value_type), weighted_next=True)


def _check_bits_and_bound(bits: int, bound: float) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f'bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}')
    if not bound > 0:
        raise ValueError(f'bound must be > 0, got {bound}')


def build_secure_mean(bits: int, bound: float, *, uniform: bool,
                      max_weight: Optional[float] = None) -> SecureQuantizedMeanFactory:
    """The (weighted) mean whose client values and weights reach the server only by secure sums.

    Args:
      bits: Bits per quantized value.
      bound: Each value (each update coordinate) is clipped to [-bound, bound].
      uniform: Unweighted mean.
      max_weight: The largest weight a client can have (examples x epochs); weighted clients
        send update x weight / max_weight, and their normalized weights in [0, 1].

    Returns:
      A weighted aggregation factory (a uniform one ignores the weights).

    Raises:
      ValueError: A weighted mean without `max_weight`.
    """
    if uniform:
        return SecureQuantizedMeanFactory(bits, bound)
    if max_weight is None:
        raise ValueError('a weighted secure mean needs max_weight (the largest client weight)')
    return SecureQuantizedMeanFactory(bits, bound, max_weight)


def max_cohort(config, selection: options.Selection) -> int:
    """The most updates an aggregation can sum: an asynchronous buffer's size; K (1 +
    over-selection) with a fixed cohort; else the population (a cohort without a fixed size)."""
    if selection.has(options.ASYNCHRONOUS):
        return config.aggregated_clients()
    if selection.has(options.FIXED_COHORT):
        return int(math.ceil(config.clients_per_round * (1 + config.over_selection)))
    return config.num_clients


def _check(config, selection: options.Selection) -> None:
    """The cohort's sum of B-bit integers must fit in int32 (a cohort without a fixed size can
    be as large as the population); a modular secure sum wraps
    around instead."""
    if selection.has(options.MODULAR_SECURE_SUM):
        return
    cohort = max_cohort(config, selection)
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
            aggregator_layer=aggregator_chain.Layer(
                aggregator_chain.SUM,
                lambda params, context, inner: SecureQuantizedSumFactory(
                    params['secure_bits'], context.value_bound or params['secure_range']),
                mean=lambda params, context: build_secure_mean(
                    params['secure_bits'], params['secure_range'], uniform=context.uniform,
                    max_weight=context.max_weight)),
            uplink_encoding=lambda config, weighted: ledger.secure_encoding(config.secure_bits,
                                                                            SIDE_VALUES)),
    ], default=False, boolean=True)
