"""Aggregation over all client updates at once: the server gathers them (no secure sum can hide
them) as a matrix, one row per client, and reduces it to one update.

TFF has no factory that hands the server every update, so we write one: `tff.federated_aggregate`
stacks the updates, each flattened into one vector (all tensors concatenated), and a reduce
function maps the [n, d] matrix to a [d] vector, unflattened into the update's structure.
Coordinate-wise rules (median, trimmed mean) and whole-update rules (Krum's distances, the
geometric median) use the same gathering. Client weights are ignored.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain

# [n clients, d values] -> [d]: the aggregate of the rows.
MatrixReduce = Callable[[tf.Tensor], tf.Tensor]

# What every gathering aggregator declares: it replaces the mean and must see each update, so
# secure aggregation and DP refuse it by capability.
CAPABILITIES = frozenset({options.REPLACES_MEAN, options.SEES_INDIVIDUAL_UPDATES})

# What a coordinate-wise rule (median, trimmed mean, Bulyan) refuses: it needs each client's
# decoded update, coordinate by coordinate. Krum, Multi-Krum and RFA depend only on distances, so
# they give the same answer on rotated updates.
COORDINATE_WISE = {options.DECODES_AGGREGATE: 'a coordinate-wise rule needs each client\'s decoded '
                                              'update, and the server un-rotates only the '
                                              'aggregate (a rotation mixes every coordinate)'}


class GatheredUpdatesFactory(tff.aggregators.UnweightedAggregationFactory):
    """Gathers every client's update at the server and reduces them with `reduce_fn` (see the
    module docstring)."""

    def __init__(self, reduce_fn: MatrixReduce):
        self._reduce_fn = reduce_fn

    def create(self, value_type) -> tff.templates.AggregationProcess:
        specs = tff.types.type_to_tf_tensor_specs(value_type)
        flat_specs = tf.nest.flatten(specs)
        sizes = [int(np.prod(s.shape)) for s in flat_specs]
        dim = sum(sizes)
        dtype = flat_specs[0].dtype
        if any(s.dtype != dtype for s in flat_specs):
            raise TypeError('gathered aggregation needs update tensors of one dtype')
        stacked_type = tff.TensorType(dtype.as_numpy_dtype, [None, dim])
        reduce_fn = self._reduce_fn

        @tff.tensorflow.computation
        def zeros():
            return tf.zeros([0, dim], dtype)

        @tff.tensorflow.computation(stacked_type, value_type)
        def accumulate(stacked, value):
            row = tf.concat([tf.reshape(t, [-1]) for t in tf.nest.flatten(value)], 0)
            return tf.concat([stacked, row[tf.newaxis]], 0)

        @tff.tensorflow.computation(stacked_type, stacked_type)
        def merge(a, b):
            return tf.concat([a, b], 0)

        @tff.tensorflow.computation(stacked_type)
        def report(stacked):
            flat = reduce_fn(stacked)
            parts = tf.split(flat, sizes)
            return tf.nest.pack_sequence_as(
                specs, [tf.reshape(p, s.shape) for p, s in zip(parts, flat_specs)])

        @tff.federated_computation
        def init_fn():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            result = tff.federated_aggregate(value, zeros(), accumulate, merge, report)
            return tff.templates.MeasuredProcessOutput(state, result,
                                                       tff.federated_value((), tff.SERVER))

        return tff.templates.AggregationProcess(init_fn, next_fn)


def squared_distances(matrix: tf.Tensor) -> tf.Tensor:
    """[n, n] squared L2 distances between the rows, in float64 (exact enough to rank updates
    whose norms differ by orders of magnitude)."""
    x = tf.cast(matrix, tf.float64)
    sq = tf.reduce_sum(x * x, axis=1)
    d2 = sq[:, tf.newaxis] + sq[tf.newaxis, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    return tf.maximum(d2, 0.0)


BYZANTINE_F = options.Param('byzantine_f', 1, 'f: Byzantine clients per round the aggregator is '
                            'built to tolerate (Krum and Multi-Krum need n > 2f + 2 clients per '
                            'round, Bulyan n >= 4f + 3).', minimum=0)


def check_cohort(config, flag: str, needed: Callable[[int], int], rule: str) -> None:
    """Raises OptionError when `clients_per_round` is below `needed(f)`."""
    n, f = config.clients_per_round, config.byzantine_f
    if n < needed(f):
        raise options.OptionError(flag, f'--aggregator={config.aggregator} with --byzantine_f={f} '
                                  f'needs {rule} clients per round, i.e. --clients_per_round >= '
                                  f'{needed(f)} (it is {n}); lower --byzantine_f or select more '
                                  'clients')


def layer(reduce_fn: Callable[..., MatrixReduce]) -> aggregator_chain.Layer:
    """The aggregator layer of a gathering rule: `reduce_fn(**its params)` reduces the matrix of
    the (decoded) client updates."""
    return aggregator_chain.Layer(
        aggregator_chain.REDUCE,
        lambda params, context, inner: GatheredUpdatesFactory(reduce_fn(**params)),
        takes_sum=False)
