"""Uplink compression of client updates, as aggregators that encode on the client and decode on
the server (simulated: the decoded values are what the sum sees).

- `quantize`: unbiased stochastic quantization of each tensor to b bits over its [min, max]
  (Alistarh et al. 2017, QSGD-style; Suresh et al. 2017): E[decoded] = value.
- `rotate_quantize`: TFF's `HadamardTransformFactory` (a random rotation, which flattens the
  value range) around `quantize` (Suresh et al. 2017, "Distributed Mean Estimation with Limited
  Communication").
- `topk`: each tensor keeps its k·n largest-magnitude values (biased; sends indices too).
- `randk`: each tensor keeps a random k·n of its values, scaled by 1/k (unbiased; the indices
  follow from a seed).

Randomness is stateless: keyed by the run's seed, a per-round counter in the aggregator state
and a 32-bit fingerprint of the client's update (the bits of its sum), so runs repeat. Clients
are not keyed by their id: two clients whose updates sum to the same float draw the same
randomness in a round (TFF's rotation draws its own seed
from the clock when the process is initialized, so `rotate_quantize` is the exception).
Error feedback for top-k / rand-k keeps per-client residuals across rounds: see `error_feedback`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.communication import ledger

MIN_BITS, MAX_BITS = 1, 16


def _fingerprint(value: tf.Tensor) -> tf.Tensor:
    """An int64 from the bits of a tensor's sum: different updates almost always give different
    draws; updates with equal sums give equal ones."""
    return tf.cast(tf.bitcast(tf.reduce_sum(tf.cast(value, tf.float32)), tf.int32), tf.int64)


def stochastic_quantize(value: tf.Tensor, bits: int, seed: tf.Tensor) -> tf.Tensor:
    """Rounds each value to one of 2^bits levels spanning [min, max], up or down at random so
    that the result is unbiased; returns the decoded values."""
    lo, hi = tf.reduce_min(value), tf.reduce_max(value)
    scale = (hi - lo) / (2 ** bits - 1)
    safe = tf.where(scale > 0, scale, tf.ones_like(scale))
    u = tf.random.stateless_uniform(tf.shape(value), seed=seed, dtype=value.dtype)
    levels = tf.floor((value - lo) / safe + u)
    return tf.where(scale > 0, lo + levels * safe, value)


def top_k(value: tf.Tensor, fraction: float) -> tf.Tensor:
    """`value` with all but its ceil(fraction · n) largest-magnitude entries zeroed."""
    flat = tf.reshape(value, [-1])
    k = ledger.kept_values(int(np.prod(value.shape)), fraction)
    _, idx = tf.math.top_k(tf.abs(flat), k=k)
    kept = tf.scatter_nd(idx[:, None], tf.gather(flat, idx), tf.shape(flat))
    return tf.reshape(kept, tf.shape(value))


def random_k(value: tf.Tensor, fraction: float, seed: tf.Tensor, unbiased: bool = True) -> tf.Tensor:
    """`value` on a random ceil(fraction · n) of its entries, scaled by n / k when `unbiased`
    (unscaled it is a contraction, as error feedback needs)."""
    n = int(np.prod(value.shape))
    k = ledger.kept_values(n, fraction)
    flat = tf.reshape(value, [-1])
    idx = tf.argsort(tf.random.stateless_uniform([n], seed=seed))[:k]
    kept = tf.scatter_nd(idx[:, None], tf.gather(flat, idx) * (n / k if unbiased else 1.0), [n])
    return tf.reshape(kept, tf.shape(value))


class ClientTransformFactory(tff.aggregators.UnweightedAggregationFactory):
    """Applies `transform(tensor, seed)` to each client tensor (encode + decode), then sums with
    `inner`. The seed is [run seed, round] folded with the tensor index and a fingerprint."""

    def __init__(self, transform: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], seed: int = 0,
                 inner: tff.aggregators.UnweightedAggregationFactory | None = None):
        self._transform, self._seed = transform, int(seed)
        self._inner = inner or tff.aggregators.SumFactory()

    def create(self, value_type) -> tff.templates.AggregationProcess:
        inner = self._inner.create(value_type)
        seed, transform = self._seed, self._transform

        @tff.tensorflow.computation
        def initial_seed():
            return tf.constant([seed, 0], tf.int64)

        @tff.tensorflow.computation(value_type, initial_seed.type_signature.result)
        def encode_decode(value, round_seed):
            flat = tf.nest.flatten(value)
            out = [transform(v, tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(round_seed, i), _fingerprint(v)))
                for i, v in enumerate(flat)]
            return tf.nest.pack_sequence_as(value, out)

        @tff.tensorflow.computation(initial_seed.type_signature.result)
        def advance(round_seed):
            return round_seed + tf.constant([0, 1], tf.int64)

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip((tff.federated_eval(initial_seed, tff.SERVER), inner.initialize()))

        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            round_seed, inner_state = state
            decoded = tff.federated_map(encode_decode, (value, tff.federated_broadcast(round_seed)))
            out = inner.next(inner_state, decoded)
            return tff.templates.MeasuredProcessOutput(
                tff.federated_zip((tff.federated_map(advance, round_seed), out.state)),
                out.result, out.measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)


@dataclasses.dataclass(frozen=True)
class Codec:
    """What one compression does to a client's tensors and what a client sends; each compression
    option declares its own (its `build()` returns it; 'none' has none).

    Attributes:
      transform: (tensor, seed, bits, k) -> the decoded tensor the server sums.
      encoding: (weighted, side bits, bits, k) -> the `ledger.UplinkEncoding` of one update.
      rotated: Wrapped in TFF's random Hadamard rotation (the server un-rotates the aggregate,
        so what it wraps must commute with rotations).
      contraction: Sparsifiers: (tensor, seed, k) -> what error feedback sends, a contraction
        (||x - C(x)|| < ||x||; rand-k is not rescaled by n/k, or the residual would grow).
    """

    transform: Callable[[tf.Tensor, tf.Tensor, int, float], tf.Tensor]
    encoding: Callable[[bool, int, int, float], ledger.UplinkEncoding]
    rotated: bool = False
    contraction: Optional[Callable[[tf.Tensor, tf.Tensor, float], tf.Tensor]] = None


def _quantized(label: str, pad: bool) -> Callable[[bool, int, int, float], ledger.UplinkEncoding]:
    def encoding(weighted, side, bits, k):  # b bits per value; each tensor's min and max.
        del weighted, k
        return ledger.UplinkEncoding(label.format(bits=bits), bits, side, per_tensor_bits=64,
                                     pad_to_power_of_two=pad)
    return encoding


QUANTIZE = Codec(lambda v, seed, bits, k: stochastic_quantize(v, bits, seed),
                 _quantized('{bits}-bit', pad=False))
ROTATE_QUANTIZE = Codec(QUANTIZE.transform, _quantized('rotated {bits}-bit', pad=True),
                        rotated=True)  # Padded to a power of two by the Hadamard transform.
TOP_K = Codec(  # Values as float32 plus their indices.
    lambda v, seed, bits, k: top_k(v, k),
    lambda weighted, side, bits, k: ledger.UplinkEncoding(
        f'top-{k:g}', ledger.FLOAT_BITS, side, kept_fraction=k, index_bits=True),
    contraction=lambda v, seed, k: top_k(v, k))
RANDOM_K = Codec(  # Values as float32; the indices follow from a 64-bit seed.
    lambda v, seed, bits, k: random_k(v, k, seed),
    lambda weighted, side, bits, k: ledger.UplinkEncoding(
        f'rand-{k:g}', ledger.FLOAT_BITS, side + 64, kept_fraction=k),
    contraction=lambda v, seed, k: random_k(v, k, seed, unbiased=False))


def codec(name: str) -> Optional[Codec]:
    """The codec of compression `name` (None for 'none'); ValueError naming the choices."""
    return COMPRESSIONS.get(name).build()


def build_compressed_sum(name: str, *, bits: int = 8, k: float = 0.1, seed: int = 0,
                         inner: tff.aggregators.UnweightedAggregationFactory | None = None,
                         ) -> tff.aggregators.UnweightedAggregationFactory:
    """Compression `name` (see `COMPRESSIONS`) of each client value, decoded before `inner`
    (default: a plain sum; 'none' is `inner` itself). For `rotate_quantize` the server un-rotates
    what `inner` returns, so `inner` must commute with rotations (a sum, a mean, Krum, RFA)."""
    check(name, bits, k)
    chosen = codec(name)
    if chosen is None:
        return inner or tff.aggregators.SumFactory()
    factory = ClientTransformFactory(lambda v, s: chosen.transform(v, s, bits, k), seed, inner)
    return tff.aggregators.HadamardTransformFactory(factory) if chosen.rotated else factory


def build_compressed_mean(name: str, *, uniform: bool, bits: int = 8, k: float = 0.1,
                          seed: int = 0) -> tff.aggregators.AggregationFactory:
    """The (weighted) mean whose client values are compressed before summing."""
    return aggregator_chain.mean_factory(uniform, build_compressed_sum(name, bits=bits, k=k,
                                                                       seed=seed))


def check(name: str, bits: int, k: float) -> None:
    """Raises ValueError for an unknown compression or a setting outside the ranges its option
    declares."""
    values = {_BITS.name: bits, _K.name: k}
    for param in COMPRESSIONS.get(name).params:
        problem = param.problem(values[param.name])
        if problem:
            raise ValueError(f'{_ARGUMENTS[param.name]} ({param.help.rstrip(".")}) {problem}')


def uplink_encoding(name: str, weighted: bool, *, bits: int = 8,
                    k: float = 0.1) -> ledger.UplinkEncoding:
    """What one client sends under compression `name` (see `ledger.UplinkEncoding`)."""
    chosen = codec(name)
    if chosen is None:
        return ledger.plain_encoding(weighted)
    return chosen.encoding(weighted, ledger.weight_bits(weighted), bits, k)


_BITS = options.Param('compression_bits', 8, 'Bits per value of quantize / rotate_quantize.',
                      minimum=MIN_BITS, maximum=MAX_BITS)
_K = options.Param('compression_k', 0.1, 'Fraction of each tensor kept by topk / randk.',
                   minimum=0.0, maximum=1.0, min_open=True)


_ARGUMENTS = {'compression_bits': 'bits', 'compression_k': 'k'}  # Flag -> build_compressed_sum's.


def _compressor(name: str, help: str, param: options.Param, chosen: Codec,
                *capabilities: str) -> options.Option:
    return options.Option(
        name, help, params=(param,), provides={options.COMPRESSED_UPLINK, *capabilities},
        excludes={options.SECURE_SUM: 'a secure sum already sends every value as a '
                                      '--secure_bits integer, and its masks make a sparse update '
                                      'dense: there is nothing left to compress'},
        build=lambda: chosen,
        aggregator_layer=aggregator_chain.Layer(
            aggregator_chain.ENCODE, lambda params, context, inner: build_compressed_sum(
                name, seed=context.seed, inner=inner,
                **{_ARGUMENTS[flag]: value for flag, value in params.items()})),
        uplink_encoding=lambda config, weighted: uplink_encoding(
            name, weighted, bits=config.compression_bits, k=config.compression_k))


# Each option's `build()` returns its `Codec` (None for 'none').
COMPRESSIONS = options.Registry('compression', 'Uplink compression of client updates.', [
    options.Option('none', 'float32 updates', build=lambda: None),
    _compressor('quantize', 'unbiased stochastic quantization to --compression_bits', _BITS,
                QUANTIZE),
    _compressor('rotate_quantize', 'random Hadamard rotation, then quantize', _BITS,
                ROTATE_QUANTIZE, options.DECODES_AGGREGATE),
    _compressor('topk', 'keep the --compression_k largest-magnitude fraction of each tensor', _K,
                TOP_K, options.SPARSIFIER),
    _compressor('randk', 'keep a random --compression_k fraction of each tensor, rescaled', _K,
                RANDOM_K, options.SPARSIFIER),
], default='none')
