"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization").

The global model w trains exactly as FedAvg (the same client work and server update). Each
client also keeps a personal model v (client state, the initial global model before it first
trains, never sent) and, in a round it takes part in, trains it on its local loss plus
(lambda/2)||v - w||^2, w being the global model it received, for the same local steps as its
FedAvg part (Algorithm 1).

The proximal term is applied as its proximal operator after each SGD step on the local loss,
v <- (v - eta g + eta lambda w) / (1 + eta lambda), which is stable for every lambda (the
explicit step of Algorithm 1, v <- v - eta (g + lambda (v - w)), diverges once eta lambda > 2)
and agrees with it to first order in eta lambda. lambda = 0 is purely local training;
lambda -> infinity gives v = w.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedper, personalization
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.secagg import tff_round
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd


def ditto_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                    weighting: weighting_lib.Weighting, ditto_lambda: float,
                    gradient_fn: client_work_lib.GradientFn = client_work_lib.mean_loss_gradients,
                    ) -> personalization.ClientFn:
    """(global weights w, personal v, round) -> (FedAvg's result and metrics, new v);
    `gradient_fn` computes each step's gradient of both models (e.g. DP-SGD's)."""
    global_training = client_work_lib.build_local_training_fn(model_fn, optimizer, weighting,
                                                              gradient_fn=gradient_fn)
    model = model_fn()

    @tf.function
    def client_update(initial_weights, personal, dataset):
        result, metrics = global_training(initial_weights, dataset)
        _, trainable = client_work_lib.load_weights(model, initial_weights)
        for v, t in zip(trainable, personal):
            v.assign(t)
        anchor = tf.nest.flatten(initial_weights.trainable)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        opt_state = optimizer.initialize(specs)
        pull = opt_state['learning_rate'] * ditto_lambda  # eta * lambda

        def step(state, batch):
            grads, _ = gradient_fn(model, batch, trainable)
            state, updated = optimizer.next(state, trainable, tuple(grads))
            for v, u, w in zip(trainable, updated, anchor):
                v.assign((u + pull * w) / (1.0 + pull))
            return state

        client_rounds.run_local_steps(client_rounds.read_round(dataset), step, opt_state)
        new_personal = personalization.finite_or_old(
            [v.read_value() for v in trainable], personal, tf.constant(True))
        return result, metrics, new_personal

    return client_update


def build_ditto(
        model_fn: ModelFn,
        *,
        ditto_lambda: float,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
        dp_sgd: Optional[dpsgd.DpSgd] = None,
) -> personalization.PersonalizedLearningProcess:
    """Builds Ditto (see the module docstring).

    Args:
      model_fn: Builds the model.
      ditto_lambda: lambda >= 0, the pull of each personal model towards the global one.
      client_optimizer: Plain SGD (default learning rate 0.1), for both models.
      server_optimizer: On the global model's aggregated delta (default SGD at 1.0).
      weighting: Weight of each client's global delta (as FedAvg).
      model_aggregator: Aggregates the global deltas (default: the mean of `weighting`).
      error_feedback: Sparsify the global delta with a residual kept on each client (a
        second client-state slot); None: send it as it is.
      secagg: Mask the global delta with the SecAgg protocol (see
        `personalization.compose_personalized`).
      dp_sgd: Every local step of both models is a DP-SGD step.

    Returns:
      A `personalization.PersonalizedLearningProcess` whose client state is v.

    Raises:
      ValueError: `ditto_lambda` < 0 or a client optimizer that is not plain SGD.
    """
    if ditto_lambda < 0:
        raise ValueError(f'ditto_lambda must be >= 0, got {ditto_lambda}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    personalization.require_plain_sgd(client_optimizer, model_fn, 'Ditto')
    count = len(model_types(model_fn).trainable_specs)
    return personalization.compose_personalized(
        model_fn,
        lambda: ditto_client_fn(model_fn, client_optimizer, weighting, float(ditto_lambda),
                                client_work_lib.gradient_fn(dp_sgd)),
        shared=[True] * count,
        personal_part=tuple,
        server_optimizer=server_optimizer,
        model_aggregator=model_aggregator or aggregator_chain.mean_factory(
            weighting_lib.resolve(weighting).uniform),
        personal_weights=lambda weights, v: personalization.replace_trainable(
            weights, range(count), v),
        error_feedback=error_feedback, secagg=secagg)


OPTION = options.Option(
    'ditto', 'Ditto (Li et al. 2021): the global model trains as FedAvg; each client also keeps '
    'a personal model (client state) trained on local loss + (--ditto_lambda/2)||v - w||^2',
    params=(options.Param('ditto_lambda', 1.0, 'Ditto: the pull lambda of each personal model '
                          'towards the global model (0: purely local training).', minimum=0.0),),
    build=build_ditto, provides=fedper.PERSONALIZED_CAPABILITIES,
    excludes={options.STATEFUL_CLIENT_OPTIMIZER: 'its personal model takes plain SGD steps on '
                                                 'the local loss plus the proximal pull (Li et '
                                                 'al. 2021, Algorithm 1)'})
