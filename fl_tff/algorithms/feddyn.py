"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization"), Algorithm 1.

Each client k keeps g_k, the gradient of its loss at its last local model (client state, slot
`dyn_gradient`, zeros at first; it never leaves the client). A selected client starts from the
server model w and solves its dynamically regularized problem

    min_v  L_k(v) - <g_k, v> + (alpha / 2) ||v - w||^2

by local SGD (the client optimizer), then sets g_k <- g_k - alpha (v - w) and sends w - v like
FedAvg. The server keeps h (in its finalizer state, zeros at first). With u the aggregated
mean of the sent deltas over the round's |P| participants and m the population size:

    h <- h + alpha (|P| / m) u          (the paper: h - (alpha / m) sum_k (v_k - w))
    w <- w - (u + h / alpha)            (the paper: mean_k v_k - h / alpha)

the second as a step of the server optimizer on the pseudo-gradient u + h / alpha (SGD at 1.0,
the default, is the paper's update). The server needs only the mean of the deltas, so the model
aggregator can be any mean: user-level DP (h and w are post-processing of the private mean),
secure sums and the SecAgg protocol, compression and error feedback all act on the delta. The
paper averages uniformly (`--client_weighting=uniform`, the declared default).

This module is the README's worked example of adding an algorithm: its client work and server
update as two stages of the round composer, one client-state slot, and its capabilities; one
line in `fl_tff/algorithms/__init__.py` registers it.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import client_state, options, round_composer, round_wrappers
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd
from fl_tff.secagg import tff_round

GRADIENT_SLOT = 'dyn_gradient'  # Each client's g_k (its client-state slot).


def _client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
               weighting: weighting_lib.Weighting, alpha: float,
               loss_gradients: client_work_lib.GradientFn = client_work_lib.mean_loss_gradients):
    """A `tf.function` (w, g_k, dataset) -> (ClientResult, metrics, new g_k);
    `loss_gradients` computes each step's gradient of L_k (e.g. DP-SGD's)."""
    model = model_fn()

    @tf.function
    def client_update(initial_weights, gradient_state, dataset):
        weights, trainable = client_work_lib.load_weights(model, initial_weights)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        linear = tf.nest.flatten(gradient_state)
        start = tf.nest.flatten(initial_weights.trainable)

        def gradient_fn(model, batch, trainable):  # grad L_k(v) - g_k; alpha (v - w) below.
            grads, output = loss_gradients(model, batch, trainable)
            return [g - l for g, l in zip(grads, linear)], output

        step = client_work_lib.local_sgd_step(model, optimizer, trainable, start,
                                              proximal_strength=alpha, gradient_fn=gradient_fn)
        element = client_rounds.read_round(dataset)
        num_examples, _ = client_rounds.run_local_steps(
            element, step, (tf.constant(0, tf.int64), optimizer.initialize(specs)))
        result, metrics = client_work_lib.finish_local_training(
            model, weights, initial_weights,
            weighting_lib.client_weight(weighting, element, num_examples), element)
        new_linear = [l - alpha * (v - w) for l, v, w in zip(linear, trainable, start)]
        # A client whose training diverged (weight 0) keeps its g_k.
        keep = tf.logical_and(result.update_weight > 0, tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(t)) for t in new_linear]))
        new_linear = [tf.where(keep, n, l) for n, l in zip(new_linear, linear)]
        return result, metrics, tf.nest.pack_sequence_as(gradient_state, new_linear)

    return client_update


def _build_finalizer(server_optimizer: tff.learning.optimizers.Optimizer, weights_type: tff.Type,
                     alpha: float, num_clients: int,
                     ) -> tuple[tff.learning.templates.FinalizerProcess, tff.Computation]:
    """The finalizer (state: optimizer state and h) and FedDyn's server update."""
    finalizer = finalizer_lib.build_finalizer_with_server_variable(server_optimizer, weights_type)
    trainable_type = weights_type.trainable
    apply_update = finalizer_lib.server_update_fn(server_optimizer)

    @tff.tensorflow.computation(finalizer.initialize.type_signature.result.member, weights_type,
                                trainable_type, np.float32)
    def server_update(state, weights, update, participants):
        opt_state, h = state
        new_h = tf.nest.map_structure(
            lambda hi, u: hi + alpha * participants / float(num_clients) * u, h, update)
        pseudo_gradient = tf.nest.map_structure(lambda u, hi: u + hi / alpha, update, new_h)
        new_opt_state, new_weights, non_finite = apply_update(opt_state, weights,
                                                              pseudo_gradient)
        new_h = tf.nest.map_structure(lambda n, o: tf.where(non_finite > 0, o, n), new_h, h)
        return (new_opt_state, new_h), new_weights, non_finite

    return finalizer, server_update


def build_feddyn(
        model_fn: ModelFn,
        *,
        feddyn_alpha: float,
        num_clients: int,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.UNIFORM,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
        dp_sgd: Optional[dpsgd.DpSgd] = None,
) -> client_state.StagedProcess:
    """Builds FedDyn (see the module docstring).

    Args:
      model_fn: Builds the model.
      feddyn_alpha: alpha > 0, the strength of the dynamic regularizer.
      num_clients: m, the population size (h moves by alpha |P| / m times the mean delta).
      client_optimizer: Solves each client's local problem (default SGD at 0.1).
      server_optimizer: On the pseudo-gradient u + h / alpha (default SGD at 1.0: the paper).
      weighting: Weight of each client's delta in the mean (default uniform, as the paper).
      model_aggregator: Aggregates the deltas (default: the mean of `weighting`).
      error_feedback: Sparsify the delta with a residual kept on each client (a second slot).
      secagg: Mask the delta with the SecAgg protocol (`model_aggregator` is then the
        structural secure mean whose packing it masks).
      dp_sgd: Run example-level DP-SGD as each local step's gradient of L_k (g_k and the delta
        are post-processing of the private steps).

    Returns:
      A `client_state.StatefulLearningProcess` (a `tff_round.SecAggLearningProcess` with
      `secagg`) whose client state is g_k and whose finalizer state is (server optimizer
      state, h).

    Raises:
      ValueError: `feddyn_alpha` <= 0 or `num_clients` < 1.
    """
    if not feddyn_alpha > 0:
        raise ValueError(f'feddyn_alpha must be > 0, got {feddyn_alpha}')
    if num_clients < 1:
        raise ValueError(f'num_clients must be >= 1, got {num_clients}')
    alpha = float(feddyn_alpha)
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    trainable_type = weights_type.trainable
    data_type = client_work_lib.client_round_type(types.input_spec)
    loss_gradients = client_work_lib.gradient_fn(dp_sgd)

    finalizer, server_update = _build_finalizer(server_optimizer, weights_type, alpha, num_clients)
    # FedAvg's parts give the server state (initialize, weights, hyperparameters); FedDyn's
    # round replaces their train and finalize stages (below).
    parts = round_composer.LearningParts(*fedavg.learning_parts(
        model_fn, client_work_lib.build_untrained_client_work(model_fn),
        server_optimizer, model_aggregator or fedavg.default_aggregator(weighting), finalizer))

    @tff.tensorflow.computation(weights_type, trainable_type, data_type)
    def client_update(initial_weights, gradient_state, dataset):
        return _client_fn(model_fn, client_optimizer, weighting, alpha, loss_gradients)(
            initial_weights, gradient_state, dataset)

    @tff.tensorflow.computation(np.float32)
    def one(weight):
        del weight  # Each participant counts once towards |P|.
        return tf.constant(1.0)

    def train(r: round_composer.Round) -> round_composer.Stage:
        result, metrics, new_gradients = tff.federated_map(
            client_update, (r.distributed.result, r.values[GRADIENT_SLOT], r.client_data))
        return round_composer.client_work_stage(
            r, result, metrics, metrics_aggregation_fn,
            client_states={GRADIENT_SLOT: new_gradients},
            extra=tff.federated_sum(tff.federated_map(one, result.update_weight)))

    def finalize(r: round_composer.Round) -> round_composer.Stage:
        new_state, new_weights, non_finite = tff.federated_map(server_update, (
            r.state.finalizer, r.state.global_model_weights, r.aggregated.result, r.work.extra))
        return round_composer.Stage(
            new_weights, new_state,
            tff.federated_zip(collections.OrderedDict(update_non_finite=non_finite)))

    return round_wrappers.build(round_composer.RoundStages(
        parts, client_values={GRADIENT_SLOT: trainable_type}, slots=(GRADIENT_SLOT,),
        train=train, finalize=finalize),
        round_wrappers.Wrappers(error_feedback, secagg, model_aggregator))


OPTION = options.Option(
    'feddyn', 'FedDyn (Acar et al. 2021): each client\'s local objective is corrected by the '
    'gradient it kept (client state) and pulled to the server model; the server corrects the '
    'mean delta by its running h',
    params=(options.Param('feddyn_alpha', 0.1, 'FedDyn: alpha, the strength of the dynamic '
                          'regularizer (the paper searches 0.1, 0.01 and 0.001).',
                          minimum=0.0, min_open=True),),
    build=build_feddyn,
    provides={options.LOCAL_EPOCHS, options.CLIENT_STATE, options.UPDATE_ATTACKS,
              options.ERROR_FEEDBACK_CLIENT, options.MASKED_UPLOADS, options.DP_SGD_CLIENT},
    defaults={'client_weighting': options.Default(
        'uniform', 'the paper averages the participants\' models uniformly (Algorithm 1)')},
    config_fields=('num_clients',))
