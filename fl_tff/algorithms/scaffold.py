"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning"), Algorithm 1 with option II control variates.

The server keeps the model x and a control variate c (in the finalizer's state); each client i
keeps its own control variate c_i (client state, zeros at first, never sent to the server). A
selected client starts from y = x and takes K local steps y <- y - lr (g_i(y) - c_i + c); then
c_i+ = c_i - c + (x - y) / (K lr), and it sends the model delta x - y and dc_i = c_i+ - c_i. The
server applies the aggregated model delta with its optimizer (SGD at rate eta_g: x <- x + eta_g
mean(y_i - x)) and moves c <- c + (1/N) sum_i dc_i, N being the number of clients.

The model delta is weighted by `weighting` and aggregated by the model aggregator like FedAvg's
(the paper averages uniformly: `--client_weighting=uniform`). The control-variate deltas go
through the side aggregator, unweighted: the same chain of aggregator options as the model
delta's without compression (the mean by default; a robust rule, user-level DP's clipped and
noised mean, a secure sum when those are selected), and c moves by m / N times that mean, m
being the number of clients aggregated (plainly: sum(dc_i) / N, as the paper). So with
user-level DP each client's two uploads are each clipped to the clip norm and noised (two
Gaussian releases a round, which the privacy ledger composes; Noble et al. 2022, "Differentially
Private Federated Learning on Heterogeneous Data", privatize SCAFFOLD's uploads too, there at
the example level), and a Byzantine client's dc_i meets the same robust rule as its model delta.
K is the number of steps the client took (partial work for stragglers). Clients need plain SGD
(the learning rate is read from its state; momentum is refused). A client whose update is not
finite, or that took no step, keeps its c_i and sends a zero dc_i.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import client_state, options, round_composer, round_wrappers
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.algorithms import personalization
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd
from fl_tff.secagg import tff_round


CONTROL_VARIATE_SLOT = 'control_variate'  # Each client's c_i (its client-state slot).


def _scaffold_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                        weighting: weighting_lib.Weighting,
                        gradient_fn: client_work_lib.GradientFn = client_work_lib.mean_loss_gradients):
    """A `tf.function` (x, c, c_i, dataset) -> (ClientResult, metrics, c_i+, c_i+ - c_i);
    `gradient_fn` computes each step's gradient g_i (e.g. DP-SGD's)."""
    model = model_fn()

    @tf.function
    def client_update(initial_weights, server_c, client_c, dataset):
        weights, trainable = client_work_lib.load_weights(model, initial_weights)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        correction = [c - ci for c, ci in zip(tf.nest.flatten(server_c), tf.nest.flatten(client_c))]
        opt_state = optimizer.initialize(specs)

        def step(state, batch):
            num_examples, num_steps, opt_state = state
            grads, output = gradient_fn(model, batch, trainable)
            grads = tuple(g + d for g, d in zip(grads, correction))  # g - c_i + c
            opt_state, updated = optimizer.next(opt_state, trainable, grads)
            for v, u in zip(trainable, updated):
                v.assign(u)
            return num_examples + tf.cast(output.num_examples, tf.int64), num_steps + 1, opt_state

        element = client_rounds.read_round(dataset)
        num_examples, num_steps, _ = client_rounds.run_local_steps(
            element, step, (tf.constant(0, tf.int64), tf.constant(0, tf.int64), opt_state))
        result, metrics = client_work_lib.finish_local_training(
            model, weights, initial_weights,
            weighting_lib.client_weight(weighting, element, num_examples), element)
        scale = tf.cast(num_steps, tf.float32) * opt_state['learning_rate']
        new_c = [ci - c + d / tf.maximum(scale, 1e-30) for ci, c, d in zip(
            tf.nest.flatten(client_c), tf.nest.flatten(server_c), tf.nest.flatten(result.update))]
        keep = tf.logical_and(num_steps > 0, tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(result.update)]))
        keep = tf.logical_and(keep, tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(t)) for t in new_c]))
        new_c = [tf.where(keep, n, ci) for n, ci in zip(new_c, tf.nest.flatten(client_c))]
        delta_c = [n - ci for n, ci in zip(new_c, tf.nest.flatten(client_c))]
        return (result, metrics, tf.nest.pack_sequence_as(client_c, new_c),
                tf.nest.pack_sequence_as(client_c, delta_c))

    return client_update


def _build_finalizer(server_optimizer: tff.learning.optimizers.Optimizer, weights_type: tff.Type,
                     num_clients: int) -> tuple[tff.learning.templates.FinalizerProcess, tff.Computation]:
    """The finalizer (state: optimizer state and c) and the server update that also moves c."""
    finalizer = finalizer_lib.build_finalizer_with_server_variable(server_optimizer, weights_type)
    trainable_type = weights_type.trainable
    apply_update = finalizer_lib.server_update_fn(server_optimizer)

    @tff.tensorflow.computation(finalizer.initialize.type_signature.result.member, weights_type,
                                trainable_type, trainable_type, np.float32)
    def server_update(state, weights, update, mean_delta_c, aggregated_clients):
        opt_state, c = state
        new_opt_state, new_weights, non_finite = apply_update(opt_state, weights, update)
        finite_c = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t))
                                  for t in tf.nest.flatten(mean_delta_c)])
        keep = tf.logical_and(tf.equal(non_finite, 0), finite_c)
        scale = aggregated_clients / float(num_clients)  # m / N: sum(dc_i) / N for the mean.
        new_c = tf.nest.map_structure(
            lambda ci, d: tf.where(keep, ci + d * scale, ci), c, mean_delta_c)
        return (new_opt_state, new_c), new_weights, non_finite

    return finalizer, server_update


def build_scaffold(
        model_fn: ModelFn,
        *,
        num_clients: int,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.UNIFORM,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        side_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        dp_sgd: Optional[dpsgd.DpSgd] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
) -> client_state.StagedProcess:
    """Builds SCAFFOLD (option II control variates) as a process with client state.

    Args:
      model_fn: Builds the model.
      num_clients: N, the number of clients in the population (the server's c moves by
        sum(dc_i) / N).
      client_optimizer: Plain SGD (default learning rate 0.1); its learning rate is the paper's
        local step size.
      server_optimizer: On the aggregated model delta (default SGD at 1.0, the paper's eta_g = 1).
      weighting: Weight of each client's model delta (default uniform, as the paper).
      model_aggregator: Aggregates model deltas (default: the plain mean of `weighting`).
      side_aggregator: Aggregates the control-variate deltas dc_i, unweighted, into their mean
        (default: the plain mean); a run passes the chain of the model aggregator's options
        without compression (`Option.side_uploads`).
      error_feedback: Sparsify the model delta with a residual kept on each client (a second
        client-state slot beside c_i); dc_i is sent as it is. None: no compression here.
      dp_sgd: Run example-level DP-SGD as each local step's gradient g_i (c_i, dc_i and the
        model delta are post-processing of the private steps).
      secagg: Run the SecAgg protocol over both uploads: each client masks the packed vectors
        of its model delta and of its dc_i (`model_aggregator` and `side_aggregator` are then
        secure means, `secure.PackedAggregator`s); c_i stays on the client.

    Returns:
      A process with client state c_i (a `client_state.StatefulLearningProcess`, or with
      `secagg` a `tff_round.SecAggLearningProcess`) whose finalizer state is (server optimizer
      state, c).

    Raises:
      ValueError: `num_clients` < 1, or a client optimizer that is not plain SGD.
    """
    if num_clients < 1:
        raise ValueError(f'num_clients must be >= 1, got {num_clients}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    personalization.require_plain_sgd(client_optimizer, model_fn, 'SCAFFOLD option II')
    trainable_type = weights_type.trainable
    data_type = client_work_lib.client_round_type(types.input_spec)
    gradient_fn = client_work_lib.gradient_fn(dp_sgd)

    finalizer, server_update = _build_finalizer(server_optimizer, weights_type, num_clients)
    # FedAvg's parts give the server state (initialize, weights, hyperparameters); SCAFFOLD's
    # round replaces their train and finalize stages (below).
    model_aggregator = model_aggregator or fedavg.default_aggregator(weighting)
    initial_weights_fn, distributor, work, model_process, _ = fedavg.learning_parts(
        model_fn, client_work_lib.build_untrained_client_work(model_fn),
        server_optimizer, model_aggregator, finalizer)
    side_aggregator = side_aggregator or aggregator_chain.mean_factory(uniform=True)
    side_process = aggregator_chain.as_weighted(side_aggregator).create(
        trainable_type, tff.TensorType(np.float32))
    parts = round_composer.LearningParts(initial_weights_fn, distributor, work, model_process,
                                         finalizer)

    @tff.tensorflow.computation(weights_type, trainable_type, trainable_type, data_type)
    def client_update(initial_weights, server_c, client_c, dataset):
        return _scaffold_client_fn(model_fn, client_optimizer, weighting, gradient_fn)(
            initial_weights, server_c, client_c, dataset)

    @tff.tensorflow.computation(finalizer.initialize.type_signature.result.member)
    def control_variate(finalizer_state):
        return finalizer_state[1]

    def train(r: round_composer.Round) -> round_composer.Stage:
        server_c = tff.federated_broadcast(tff.federated_map(control_variate, r.state.finalizer))
        outputs = tff.federated_map(client_update, (
            r.distributed.result, server_c, r.values[CONTROL_VARIATE_SLOT], r.client_data))
        result, metrics, new_cs, delta_cs = (outputs[i] for i in range(4))
        # dc_i is the round's side upload: the side aggregator (the round's default aggregate
        # stage) averages it, each client weighing 1.
        return round_composer.client_work_stage(r, result, metrics, metrics_aggregation_fn,
                                                client_states={CONTROL_VARIATE_SLOT: new_cs},
                                                side=delta_cs)

    def finalize(r: round_composer.Round) -> round_composer.Stage:
        # c moves by (m / N) mean(dc_i), i.e. (1 / N) sum(dc_i) for the plain mean; m, the
        # number of clients aggregated.
        side: round_composer.SideAggregate = r.aggregated.extra
        mean_delta_c, aggregated_clients = side.result, side.clients
        server = tff.federated_map(server_update, (
            r.state.finalizer, r.state.global_model_weights, r.aggregated.result,
            mean_delta_c, aggregated_clients))
        new_finalizer_state, new_weights, non_finite = server[0], server[1], server[2]
        return round_composer.Stage(
            new_weights, new_finalizer_state,
            tff.federated_zip(collections.OrderedDict(update_non_finite=non_finite)))

    return round_wrappers.build(round_composer.RoundStages(
        parts, client_values={CONTROL_VARIATE_SLOT: trainable_type},
        slots=(CONTROL_VARIATE_SLOT,), side_aggregator=side_process, train=train,
        finalize=finalize),
        round_wrappers.Wrappers(error_feedback, secagg, model_aggregator,
                                side_aggregator))


OPTION = options.Option(
    'scaffold', 'SCAFFOLD (Karimireddy et al. 2020, option II): local SGD corrected by server and '
    'client control variates (client state); uplink: the model delta (through the model '
    'aggregator: compressed with --compression) and dc_i (through the same aggregator options '
    'uncompressed: securely summed (masked with the delta under --secagg), robustly aggregated, '
    'or clipped and noised as a second DP release)',
    build=build_scaffold,
    provides={options.LOCAL_EPOCHS, options.CLIENT_STATE, options.UPDATE_ATTACKS,
              options.ERROR_FEEDBACK_CLIENT, options.DP_SGD_CLIENT, options.MASKED_UPLOADS},
    excludes={
        options.STATEFUL_CLIENT_OPTIMIZER: 'option II computes c_i from plain SGD steps '
                                           '(c_i+ = c_i - c + (x - y_i) / (K lr))',
    },
    defaults={'client_weighting': options.Default(
        'uniform', 'the paper averages the sampled clients\' updates uniformly (Algorithm 1); '
        'with example weights x and c would move by different rules (0.623 against 0.718 test '
        'accuracy on a shards(1) run)')},
    # The model delta goes through the model aggregator (compressed when --compression says
    # so); dc_i through the side aggregator (the same options, uncompressed).
    uplink_model_copies=1, side_uploads=1, config_fields=('num_clients',))
