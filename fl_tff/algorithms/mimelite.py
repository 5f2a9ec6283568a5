"""MIME-lite (Karimireddy et al. 2021, "Breaking the centralized barrier for cross-device
federated learning"), built from stages.

The server keeps the model x and the base optimizer's state: SGD with momentum beta
(`--mime_momentum`), whose accumulator m sits in the finalizer's state beside the server
optimizer's. A selected client receives x and m, computes its full-batch gradient g_i at x (the
mean loss gradient over every batch of its round, as TFF's builder does), then takes its local
steps with the base optimizer's state frozen: y <- y - lr (beta m + grad(y)), lr being the client
optimizer's rate. It sends the model delta x - y and, beside it, g_i. The server applies the
aggregated delta with its own optimizer and moves m <- beta m + mean(g_i).

The delta goes through the model aggregator as FedAvg's update does (compressed with
`--compression`, error feedback with `--error_feedback`). g_i is the round's side upload
(`round_composer.RoundStages.side_aggregator`): the same aggregator options without compression,
each gradient weighing as its client's delta (TFF's `build_weighted_mime_lite` averages the
gradients with the update weights; under uniform weighting, the paper's mean over the sampled
clients). So with `--secure_agg` both uploads are summed securely (and masked together under
`--secagg`), a robust rule filters both, and user-level DP clips and noises both (two Gaussian
releases a round, which the privacy ledger composes). A client whose delta or gradient is not
finite sends zeros for both: weighing 0 in weighted means, and counting once in uniform ones,
as a diverged client does in every algorithm's uniform mean here.

Equal to TFF's builder on the same batches (tests/algorithms/test_mimelite.py), which this
module no longer calls: its client work averaged the gradients inside itself, in the clear.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options, round_composer, round_wrappers
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.algorithms import personalization
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.secagg import tff_round


def _mime_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                    weighting: weighting_lib.Weighting, momentum: float):
    """A `tf.function` (x, m, dataset) -> (ClientResult(x - y, w_i), metrics, g_i)."""
    model = model_fn()

    @tf.function
    def client_update(initial_weights, server_momentum, dataset):
        weights, trainable = client_work_lib.load_weights(model, initial_weights)
        element = client_rounds.read_round(dataset)

        _, full_gradient = client_work_lib.full_batch_gradient(model, element, trainable)
        model.reset_metrics()  # The round's metrics are its training steps'.

        frozen = tf.nest.flatten(server_momentum)
        beta = tf.constant(momentum, tf.float32)
        opt_state = optimizer.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))

        def frozen_momentum(model, batch, trainable):  # The base optimizer's state, frozen.
            grads, output = client_work_lib.mean_loss_gradients(model, batch, trainable)
            return tuple(beta * m + g for m, g in zip(frozen, grads)), output

        train_step = client_work_lib.local_sgd_step(model, optimizer, trainable, [],
                                                    gradient_fn=frozen_momentum)
        num_examples, _ = client_rounds.run_local_steps(
            element, train_step, (tf.constant(0, tf.int64), opt_state))
        result, metrics = client_work_lib.finish_local_training(
            model, weights, initial_weights,
            weighting_lib.client_weight(weighting, element, num_examples), element)
        # A gradient that is not finite (or a diverged client's) is sent as zeros: weight 0
        # would not cancel a NaN, and a secure sum would quantize it into a finite wrong value.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t))
                                for t in [*full_gradient, *tf.nest.flatten(result.update)]])
        full_gradient = [tf.where(finite, g, tf.zeros_like(g)) for g in full_gradient]
        return (result, metrics,
                tf.nest.pack_sequence_as(initial_weights.trainable, full_gradient))

    return client_update


def build_mime_lite(model_fn: ModelFn, *, mime_momentum: float = 0.9,
                    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                    weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                    model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                    side_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                    error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
                    secagg: Optional[tff_round.SecAggSettings] = None):
    """Builds MIME-lite from stages.

    Args:
      model_fn: Builds the model.
      mime_momentum: beta, the base optimizer's momentum (its learning rate is the client
        optimizer's).
      client_optimizer: Plain SGD (default 0.1) giving the base optimizer's learning rate.
      server_optimizer: Applied to the aggregated model delta (default SGD at 1.0).
      weighting: Weight of each client's delta, and of its gradient in their mean.
      model_aggregator: Aggregates the model deltas (default: the plain mean of `weighting`).
      side_aggregator: Aggregates the full-batch gradients, weighted as the deltas (default:
        the plain mean); a run passes the chain of the model aggregator's options without
        compression (`Option.side_uploads`).
      error_feedback: Sparsify the delta with a residual kept on each client (a client-state
        slot); the gradient is sent as it is.
      secagg: Run the SecAgg protocol over both uploads (`model_aggregator` and
        `side_aggregator` are then secure means, `secure.PackedAggregator`s).

    Returns:
      TFF's `LearningProcess` (with `error_feedback` or `secagg`, a process with client values)
      whose finalizer state is (server optimizer state, the base optimizer's accumulator m).

    Raises:
      ValueError: A client optimizer that is not plain SGD, or momentum outside [0, 1).
    """
    if not 0 <= mime_momentum < 1:
        raise ValueError(f'mime_momentum must be in [0, 1), got {mime_momentum}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    personalization.require_plain_sgd(client_optimizer, model_fn, 'MIME-lite (base SGD rate)')
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    trainable_type = weights_type.trainable
    data_type = client_work_lib.client_round_type(types.input_spec)

    finalizer = finalizer_lib.build_finalizer_with_server_variable(server_optimizer, weights_type)
    state_type = finalizer.initialize.type_signature.result.member
    apply_update = finalizer_lib.server_update_fn(server_optimizer)
    model_aggregator = model_aggregator or fedavg.default_aggregator(weighting)
    initial_weights_fn, distributor, work, model_process, _ = fedavg.learning_parts(
        model_fn, client_work_lib.build_untrained_client_work(model_fn),
        server_optimizer, model_aggregator, finalizer)
    side_aggregator = side_aggregator or aggregator_chain.mean_factory(
        uniform=weighting_lib.resolve(weighting).uniform)
    side_process = aggregator_chain.as_weighted(side_aggregator).create(
        trainable_type, tff.TensorType(np.float32))
    parts = round_composer.LearningParts(initial_weights_fn, distributor, work, model_process,
                                         finalizer)

    @tff.tensorflow.computation(weights_type, trainable_type, data_type)
    def client_update(initial_weights, server_momentum, dataset):
        return _mime_client_fn(model_fn, client_optimizer, weighting, mime_momentum)(
            initial_weights, server_momentum, dataset)

    @tff.tensorflow.computation(state_type)
    def base_momentum(finalizer_state):
        return finalizer_state[1]

    @tff.tensorflow.computation(state_type, weights_type, trainable_type, trainable_type)
    def server_update(state, weights, update, mean_gradient):
        opt_state, accumulator = state
        new_opt_state, new_weights, non_finite = apply_update(opt_state, weights, update)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t))
                                for t in tf.nest.flatten(mean_gradient)])
        beta = tf.constant(mime_momentum, tf.float32)
        # TFF's update of the base optimizer's state: m <- beta m + g (its `next` on zeros).
        new_accumulator = tf.nest.map_structure(
            lambda m, g: tf.where(finite, beta * m + g, m), accumulator, mean_gradient)
        return (new_opt_state, new_accumulator), new_weights, non_finite

    def train(r: round_composer.Round) -> round_composer.Stage:
        momentum = tff.federated_broadcast(tff.federated_map(base_momentum, r.state.finalizer))
        outputs = tff.federated_map(client_update, (r.distributed.result, momentum,
                                                    r.client_data))
        return round_composer.client_work_stage(r, outputs[0], outputs[1], metrics_aggregation_fn,
                                                side=outputs[2])

    def finalize(r: round_composer.Round) -> round_composer.Stage:
        side: round_composer.SideAggregate = r.aggregated.extra
        server = tff.federated_map(server_update, (
            r.state.finalizer, r.state.global_model_weights, r.aggregated.result, side.result))
        return round_composer.Stage(
            server[1], server[0],
            tff.federated_zip(collections.OrderedDict(update_non_finite=server[2])))

    return round_wrappers.build(
        round_composer.RoundStages(parts, side_aggregator=side_process, side_weighted=True,
                                   train=train, finalize=finalize),
        round_wrappers.Wrappers(error_feedback, secagg, model_aggregator, side_aggregator))


OPTION = options.Option(
    'mimelite', 'MIME-lite (Karimireddy et al. 2021): client SGD with the server\'s frozen '
    'momentum state, refreshed from the clients\' full-batch gradients; uplink: the model delta '
    '(through the model aggregator: compressed with --compression) and the gradient (through the '
    'same aggregator options uncompressed, weighted as the delta: securely summed, robustly '
    'aggregated, or clipped and noised as a second DP release)',
    build=build_mime_lite,
    params=(options.Param('mime_momentum', 0.9, 'MIME-lite: momentum of the base optimizer.',
                          minimum=0.0, maximum=1.0, max_open=True),),
    provides={options.LOCAL_EPOCHS, options.UPDATE_ATTACKS, options.ERROR_FEEDBACK_CLIENT,
              options.MASKED_UPLOADS},
    defaults={
        'client_weighting': options.Default(
            'examples_processed', 'as TFF\'s build_weighted_mime_lite, which it equals'),
        'client_learning_rate': options.Default(
            0.005, 'the base optimizer applies the server\'s momentum 0.9 to every local step, '
            'so a step moves about 1 / (1 - 0.9) = 10 times the rate: 0.005 is the project\'s '
            '0.05 (on digits, at 0.05 test accuracy fell from 0.649 at round 10 to 0.125 at '
            'round 50; at 0.005 it rose to 0.908)')},
    excludes={
        options.EXAMPLE_LEVEL_DP: 'each client also sends its full-batch gradient at x, computed '
                                  'on every example outside the DP-SGD steps the ledger '
                                  'accounts; it would need a private release of its own',
        options.STATEFUL_CLIENT_OPTIMIZER: 'its local steps are plain SGD steps with the '
                                           'server\'s momentum (Karimireddy et al. 2021, '
                                           'Algorithm 1); the client optimizer is its base SGD',
    },
    # The delta goes through the model aggregator; the gradient through the side aggregator.
    uplink_model_copies=1, side_uploads=1, side_weighted=True)
