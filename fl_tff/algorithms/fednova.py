"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization"), with plain local SGD.

Clients that run different numbers of local steps tau_i (unequal data, stragglers' partial
work) pull FedAvg towards the objective of those that ran more. FedNova normalizes: client i
sends its delta per step d_i = (x - y_i) / tau_i and the server steps

    x <- x - tau_eff sum_i p_i d_i,   tau_eff = sum_i p_i tau_i,

p_i being the client weights normalized to sum to one (`--client_weighting`; the paper uses
data sizes). Both sums are one weighted mean of the extended update (d_i, tau_i); the finalizer
multiplies them and applies the server optimizer (SGD at 1 for the paper's rule). With equal
tau_i it is FedAvg (tested).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn
from fl_tff.privacy import dpsgd


def _fednova_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                       weighting: weighting_lib.Weighting, dp_sgd: Optional[dpsgd.DpSgd] = None):
    """A `tf.function` (weights, round) -> (ClientResult((d_i, tau_i), weight), metrics)."""
    local_training = client_work_lib.build_local_training_fn(
        model_fn, optimizer, weighting, gradient_fn=client_work_lib.gradient_fn(dp_sgd))

    @tf.function
    def client_update(initial_weights, dataset):
        steps = tf.shape(client_rounds.read_round(dataset)[client_rounds.STEP_SIZES_KEY])[0]
        tau = tf.cast(steps, tf.float32)
        result, metrics = local_training(initial_weights, dataset)
        per_step = tf.nest.map_structure(lambda u: u / tf.maximum(tau, 1.0), result.update)
        return (tff.learning.templates.ClientResult(
            update=(per_step, tau), update_weight=result.update_weight), metrics)

    return client_update


def build_fednova(model_fn: ModelFn, *,
                  client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                  dp_sgd: Optional[dpsgd.DpSgd] = None,
                  ) -> tff.learning.templates.LearningProcess:
    """Builds FedNova.

    Args:
      model_fn: Builds the model.
      client_optimizer: Local optimizer (default SGD at 0.1).
      server_optimizer: Applied to tau_eff sum_i p_i d_i (default SGD at 1.0, the paper's rule).
      weighting: p_i (default: examples processed).
      model_aggregator: A (weighted) mean of the extended updates (d_i, tau_i).
      dp_sgd: Clients run example-level DP-SGD in their local steps (tau_i, their count, is
        what a FedAvg client's examples-processed weight already reveals).

    Returns:
      The learning process.
    """
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    with tf.Graph().as_default():
        weights_type = tff.learning.models.weights_type_from_model(model_fn())

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    client_work = client_work_lib.build_client_work(
        model_fn, lambda: _fednova_client_fn(model_fn, client_optimizer, weighting, dp_sgd))
    # (d_i, tau_i), typed as the client work returns it.
    extended_type = client_work.next.type_signature.result.result.member.update
    model_aggregator = model_aggregator or fedavg.default_aggregator(weighting)
    aggregator = aggregator_chain.as_weighted(model_aggregator).create(extended_type, tff.TensorType(np.float32))
    inner = finalizer_lib.build_server_update_finalizer(server_optimizer, weights_type)

    @tff.tensorflow.computation(extended_type)
    def normalized_step(extended):
        mean_per_step, tau_eff = extended[0], extended[1]
        return tf.nest.map_structure(lambda d: tau_eff * d, mean_per_step)

    @tff.federated_computation(inner.initialize.type_signature.result,
                               tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(extended_type, tff.SERVER))
    def finalizer_next(state, weights, extended):
        return inner.next(state, weights, tff.federated_map(normalized_step, extended))

    finalizer = tff.learning.templates.FinalizerProcess(inner.initialize, finalizer_next)
    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn, tff.learning.templates.build_broadcast_process(weights_type),
        client_work, aggregator, finalizer)


OPTION = options.Option(
    'fednova', 'FedNova (Wang et al. 2020): deltas normalized by local steps, rescaled by the '
    'weighted mean step count', build=build_fednova,
    provides={options.LOCAL_EPOCHS, options.UPDATE_ATTACKS, options.DP_SGD_CLIENT},
    excludes={
        options.REPLACES_MEAN: 'tau_eff and the normalized deltas must be weighted means',
        options.SECURE_SUM: 'its step count tau_i is a value outside the secure range',
        options.USER_LEVEL_DP: 'clipping and noise would also act on the step count tau_i',
        options.COMPRESSED_UPLINK: 'its step count tau_i would be compressed with the update',
        options.STATEFUL_CLIENT_OPTIMIZER: 'it normalizes by the count of plain SGD steps; '
                                           'momentum needs another normalizer (Wang et al. 2020, '
                                           'Section 4)',
    })
