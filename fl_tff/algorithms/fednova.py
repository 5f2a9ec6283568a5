"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization"), with plain local SGD.

Clients that run different numbers of local steps tau_i (unequal data, stragglers' partial
work) pull FedAvg towards the objective of those that ran more. FedNova normalizes: client i
sends its delta per step d_i = (x - y_i) / tau_i and the server steps

    x <- x - tau_eff sum_i p_i d_i,   tau_eff = sum_i p_i tau_i,

p_i being the client weights w_i normalized to sum to one (`--client_weighting`; the paper uses
data sizes). The round is FedAvg's with two stages replaced: d_i goes through the model
aggregator as FedAvg's update does (weighted mean; compressed under `--compression`, with error
feedback under `--error_feedback`), and each client sends beside it the two scalars
(w_i tau_i, w_i) as a side upload, averaged plainly (their ratio is tau_eff); the finalizer
scales the mean of the d_i by tau_eff and applies the server optimizer (SGD at 1 for the
paper's rule). With equal tau_i it is FedAvg (tested).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options, round_composer, round_wrappers
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd


# The side upload: (w_i tau_i, w_i), whose plain means' ratio is tau_eff.
SIDE_TYPE = tff.TensorType(np.float32, [2])


def _fednova_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                       weighting: weighting_lib.Weighting, dp_sgd: Optional[dpsgd.DpSgd] = None):
    """A `tf.function` (weights, round) -> (ClientResult(d_i, w_i), metrics, (w_i tau_i, w_i))."""
    local_training = client_work_lib.build_local_training_fn(
        model_fn, optimizer, weighting, gradient_fn=client_work_lib.gradient_fn(dp_sgd))
    uniform = weighting_lib.resolve(weighting).uniform

    @tf.function
    def client_update(initial_weights, dataset):
        steps = tf.shape(client_rounds.read_round(dataset)[client_rounds.STEP_SIZES_KEY])[0]
        tau = tf.cast(steps, tf.float32)
        result, metrics = local_training(initial_weights, dataset)
        per_step = tf.nest.map_structure(lambda u: u / tf.maximum(tau, 1.0), result.update)
        # p_i as the model aggregator weighs d_i: under uniform weighting its mean counts every
        # client once (a diverged one with its zeroed d_i too), so tau_eff counts it once too.
        weight = (tf.constant(1.0) if uniform
                  else tf.cast(result.update_weight, tf.float32))
        return (tff.learning.templates.ClientResult(update=per_step,
                                                    update_weight=result.update_weight),
                metrics, tf.stack([weight * tau, weight]))

    return client_update


def build_fednova(model_fn: ModelFn, *,
                  client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                  error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
                  dp_sgd: Optional[dpsgd.DpSgd] = None) -> Any:
    """Builds FedNova.

    Args:
      model_fn: Builds the model.
      client_optimizer: Local optimizer (default SGD at 0.1).
      server_optimizer: Applied to tau_eff sum_i p_i d_i (default SGD at 1.0, the paper's rule).
      weighting: p_i (default: examples processed).
      model_aggregator: The (weighted) mean of the normalized deltas d_i (default: the plain
        weighted mean), e.g. compressed.
      error_feedback: Sparsify d_i with a residual kept on each client (a client-state slot).
      dp_sgd: Clients run example-level DP-SGD in their local steps (tau_i, their count, is
        what a FedAvg client's examples-processed weight already reveals).

    Returns:
      TFF's `LearningProcess`, or with `error_feedback` a process with client state
      (`client_state.StatefulLearningProcess`).
    """
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    data_type = client_work_lib.client_round_type(types.input_spec)
    model_aggregator = model_aggregator or fedavg.default_aggregator(weighting)
    # FedAvg's parts give the server state; FedNova's round replaces train and finalize.
    parts = round_composer.LearningParts(*fedavg.learning_parts(
        model_fn, client_work_lib.build_untrained_client_work(model_fn),
        server_optimizer, model_aggregator))
    side_process = aggregator_chain.as_weighted(aggregator_chain.mean_factory(
        uniform=True)).create(SIDE_TYPE, tff.TensorType(np.float32))

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, dataset):
        return _fednova_client_fn(model_fn, client_optimizer, weighting, dp_sgd)(
            initial_weights, dataset)

    @tff.tensorflow.computation(weights_type.trainable, SIDE_TYPE)
    def normalized_step(mean_per_step, side_mean):
        tau_eff = tf.math.divide_no_nan(side_mean[0], side_mean[1])
        return tf.nest.map_structure(lambda d: tau_eff * d, mean_per_step)

    def train(r: round_composer.Round) -> round_composer.Stage:
        outputs = tff.federated_map(client_update, (r.distributed.result, r.client_data))
        return round_composer.client_work_stage(r, outputs[0], outputs[1], metrics_aggregation_fn,
                                                side=outputs[2])

    def finalize(r: round_composer.Round) -> round_composer.Stage:
        side: round_composer.SideAggregate = r.aggregated.extra
        update = tff.federated_map(normalized_step, (r.aggregated.result, side.result))
        out = parts.finalizer.next(r.state.finalizer, r.state.global_model_weights, update)
        return round_composer.Stage(out.result, out.state, out.measurements)

    return round_wrappers.build(
        round_composer.RoundStages(parts, side_aggregator=side_process, train=train,
                                   finalize=finalize),
        round_wrappers.Wrappers(error_feedback=error_feedback))


OPTION = options.Option(
    'fednova', 'FedNova (Wang et al. 2020): deltas normalized by local steps, rescaled by the '
    'weighted mean step count', build=build_fednova,
    provides={options.LOCAL_EPOCHS, options.UPDATE_ATTACKS, options.DP_SGD_CLIENT,
              options.ERROR_FEEDBACK_CLIENT},
    excludes={
        options.REPLACES_MEAN: 'tau_eff and the normalized deltas must be weighted means',
        options.SECURE_SUM: 'each client sends w_i tau_i and w_i in the clear beside its update '
                            '(tau_eff needs them), so a secure sum would hide the update but '
                            'not the client\'s weight and step count',
        options.USER_LEVEL_DP: 'tau_eff is a weighted mean of the clients\' step counts, a '
                               'statistic of their data sizes released without noise',
        options.STATEFUL_CLIENT_OPTIMIZER: 'it normalizes by the count of plain SGD steps; '
                                           'momentum needs another normalizer (Wang et al. 2020, '
                                           'Section 4)',
    },
    # w_i tau_i and w_i, two float32 values beside the update (whose compression skips them).
    plain_side_values=2)
