"""FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers"): the last
N layers of the model (the "head") are personal.

Each client keeps its head as client state (the global model's initial head before it first
trains), never sends it, and trains body and head together by local SGD from the global body
and its own head; only the body's delta is aggregated (like FedAvg's). The server's copy of the
head keeps its initial value. With N = 0 it is FedAvg.

FedRep (`fl_tff.algorithms.fedrep`) uses the same client state and alternates instead.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import personalization
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.secagg import tff_round
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn
from fl_tff.privacy import dpsgd


def personal_layers_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                              weighting: weighting_lib.Weighting, personal: tuple[bool, ...],
                              head_epochs: Optional[int] = None,
                              gradient_fn: client_work_lib.GradientFn = (
                                  client_work_lib.mean_loss_gradients),
                              ) -> personalization.ClientFn:
    """The client function of FedPer (`head_epochs` None: all variables train together) or
    FedRep (the head alone for the first `head_epochs` local epochs of the round, then the body
    alone): (global weights, head, round) -> (body delta, metrics, new head). `gradient_fn`
    computes each step's gradient (e.g. DP-SGD's)."""
    model = model_fn()

    @tf.function
    def client_update(initial_weights, head, dataset):
        weights, trainable = client_work_lib.load_weights(model, initial_weights)
        personal_vars = [v for v, p in zip(trainable, personal) if p]
        for v, t in zip(personal_vars, head):
            v.assign(t)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        element = client_rounds.read_round(dataset)
        head_examples = (None if head_epochs is None
                         else element[client_rounds.CLIENT_EXAMPLES_KEY] * head_epochs)

        def step(state, batch):
            num_examples, opt_state = state
            grads, output = gradient_fn(model, batch, trainable)
            opt_state, updated = optimizer.next(opt_state, trainable, tuple(grads))
            if head_examples is None:
                for v, u in zip(trainable, updated):
                    v.assign(u)
            else:  # FedRep: the phase is decided by where the step starts in the stream.
                head_phase = num_examples < head_examples
                for v, u, p in zip(trainable, updated, personal):
                    v.assign(tf.where(tf.equal(head_phase, p), u, v))
            return num_examples + tf.cast(output.num_examples, tf.int64), opt_state

        num_examples, _ = client_rounds.run_local_steps(
            element, step, (tf.constant(0, tf.int64), optimizer.initialize(specs)))
        initial = tf.nest.flatten(initial_weights.trainable)
        body_delta = tuple(w0 - v for w0, v, p in zip(initial, trainable, personal) if not p)
        result, metrics = client_work_lib.client_result(
            model, body_delta, weighting_lib.client_weight(weighting, element, num_examples),
            element)
        new_head = personalization.finite_or_old(
            [v.read_value() for v in personal_vars], head, result.update_weight > 0)
        return result, metrics, new_head

    return client_update


def build_personal_layers(
        model_fn: ModelFn,
        *,
        personal_layers: int,
        head_epochs: Optional[int] = None,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
        dp_sgd: Optional[dpsgd.DpSgd] = None,
) -> personalization.PersonalizedLearningProcess:
    """FedPer (`head_epochs` None) or FedRep (`head_epochs` >= 0) with the last
    `personal_layers` layers personal; other arguments as `fl_tff.algorithms.build_fedavg`
    (`dp_sgd`: every local step, head and body, is a DP-SGD step).

    Raises:
      ValueError: `personal_layers` out of range for the model (see
        `personalization.personal_mask`).
    """
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    personal = personalization.personal_mask(model_fn, personal_layers)
    positions = [i for i, p in enumerate(personal) if p]
    return personalization.compose_personalized(
        model_fn,
        lambda: personal_layers_client_fn(model_fn, client_optimizer, weighting, personal,
                                          head_epochs, client_work_lib.gradient_fn(dp_sgd)),
        shared=[not p for p in personal],
        personal_part=lambda trainable: tuple(t for t, p in zip(trainable, personal) if p),
        server_optimizer=server_optimizer,
        model_aggregator=model_aggregator or aggregator_chain.mean_factory(
            weighting_lib.resolve(weighting).uniform),
        personal_weights=lambda weights, head: personalization.replace_trainable(
            weights, positions, head),
        error_feedback=error_feedback, secagg=secagg)


def build_fedper(model_fn: ModelFn, *, personal_layers: int,
                 **kwargs) -> personalization.PersonalizedLearningProcess:
    """Builds FedPer with the last `personal_layers` layers personal (see the module docstring).

    Args:
      model_fn: Builds the model.
      personal_layers: How many of the model's last layers (those with trainable variables)
        are personal; 0 gives FedAvg.
      **kwargs: `client_optimizer`, `server_optimizer`, `weighting`, `model_aggregator`, as
        `fl_tff.algorithms.build_fedavg`.

    Returns:
      A `personalization.PersonalizedLearningProcess` whose client state is the head.

    Raises:
      ValueError: `personal_layers` out of range for the model.
    """
    return build_personal_layers(model_fn, personal_layers=personal_layers, **kwargs)


def check_personal_layers(config, model_fn: ModelFn) -> None:
    """Refuses a `--personal_layers` the model does not have (at least one layer stays shared)."""
    try:
        personalization.personal_mask(model_fn, config.personal_layers)
    except ValueError as e:
        raise options.OptionError('personal_layers', f'{e} (--model={config.model})') from e


PERSONAL_LAYERS = options.Param(
    'personal_layers', 1, 'FedPer / FedRep: how many of the model\'s last layers (with '
    'trainable variables) are personal: kept on each client, never sent.', minimum=0)

# Personal models compose with the aggregators of the shared part (DP, secure sums, the SecAgg
# protocol and compression act on the shared delta only, and error feedback keeps its residual
# as a second client-state slot beside the personal part), and their clients' local steps can
# be DP-SGD's.
PERSONALIZED_CAPABILITIES = frozenset({options.LOCAL_EPOCHS, options.CLIENT_STATE,
                                       options.PERSONAL_MODEL, options.UPDATE_ATTACKS,
                                       options.ERROR_FEEDBACK_CLIENT, options.MASKED_UPLOADS,
                                       options.DP_SGD_CLIENT})

OPTION = options.Option(
    'fedper', 'FedPer (Arivazhagan et al. 2019): the last --personal_layers layers stay on each '
    'client (client state); body and head train together, only the body is aggregated',
    params=(PERSONAL_LAYERS,), build=build_fedper, provides=PERSONALIZED_CAPABILITIES,
    check_model=check_personal_layers)
