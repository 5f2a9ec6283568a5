"""What personalized algorithms share: a federated part the server aggregates and a personal part
each client keeps as client state (`fl_tff.client_state`), never sent.

* `personal_mask` splits a model's trainable variables into shared and personal ones by Keras
  layer (the last N layers that have trainable variables are personal: FedPer's and FedRep's
  "head").
* `compose_personalized` composes (`fl_tff.round_composer`) TFF's broadcast, a train stage that
  trains from the global model and the client's personal state (its client-state slot), the
  model aggregator (over the shared variables only) and our server finalizer into a
  `client_state.StatefulLearningProcess`. Only the shared
  variables' update is CLIENTS-placed input to an aggregation; the personal state goes back to
  the client store CLIENTS-placed.
* `PersonalizedProcess` is the protocol evaluation uses to build a client's own model from the
  global weights and its state.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import client_state, round_composer, round_wrappers
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.secagg import tff_round
from fl_tff.models.model_fn import ModelFn, model_types

PERSONAL_SLOT = 'personal'  # Each client's personal part (its client-state slot).

# A per-client `tf.function` (global weights, personal state tuple, client round) ->
# (ClientResult whose update is the tuple of shared-variable deltas, metrics, new personal state).
ClientFn = Callable[[Any, tuple, tf.data.Dataset], tuple[Any, Any, tuple]]


@runtime_checkable
class PersonalizedProcess(Protocol):
    """A process whose clients keep a personal model part (see the module docstring)."""

    def personal_weights(self, global_weights: tff.learning.models.ModelWeights,
                         client_state: client_state.FlatState) -> tff.learning.models.ModelWeights:
        """The model a client with `client_state` uses, given the global weights."""


def layer_groups(names: Sequence[str]) -> list[list[int]]:
    """Indices of variables (by their `names`) grouped by the Keras layer that owns them (the
    name's scope), in order of first appearance."""
    groups: dict[str, list[int]] = collections.OrderedDict()
    for i, name in enumerate(names):
        groups.setdefault(name.rsplit('/', 1)[0], []).append(i)
    return list(groups.values())


def personal_mask(model_fn: ModelFn, personal_layers: int) -> tuple[bool, ...]:
    """Which trainable variables are personal: those of the last `personal_layers` layers that
    have trainable variables.

    Raises:
      ValueError: `personal_layers` < 0, or not fewer than the model's layers with variables
        (at least one layer must stay shared).
    """
    count, groups = _variable_layers(model_fn)
    if not 0 <= personal_layers < len(groups):
        raise ValueError(f'personal_layers must be in [0, {len(groups) - 1}] for this model '
                         f'({len(groups)} layers with trainable variables), got {personal_layers}')
    personal = {i for group in groups[len(groups) - personal_layers:] for i in group}
    return tuple(i in personal for i in range(count))


def _variable_layers(model_fn: ModelFn) -> tuple[int, list[list[int]]]:
    """(number of trainable variables, `layer_groups` of them) of the model `model_fn` builds."""
    names = model_types(model_fn).trainable_names
    return len(names), layer_groups(names)


def require_plain_sgd(optimizer: tff.learning.optimizers.Optimizer, model_fn: ModelFn,
                     algorithm: str) -> None:
    """Raises ValueError unless `optimizer` is plain SGD (its state is its learning rate only)."""
    with tf.Graph().as_default():
        state = optimizer.initialize(model_types(model_fn).trainable_specs)
    if set(state) != {'learning_rate'}:
        raise ValueError(f'{algorithm} needs plain SGD on clients (its local step uses the '
                         f'learning rate); the client optimizer has state {sorted(state)}')


def compose_personalized(
        model_fn: ModelFn,
        make_client_fn: Callable[[], ClientFn],
        *,
        shared: Sequence[bool],
        personal_part: Callable[[Sequence[Any]], tuple],
        server_optimizer: tff.learning.optimizers.Optimizer,
        model_aggregator: tff.aggregators.AggregationFactory,
        personal_weights: Callable[[tff.learning.models.ModelWeights, client_state.FlatState],
                                   tff.learning.models.ModelWeights],
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
) -> 'PersonalizedLearningProcess | PersonalizedSecAggProcess':
    """A process with personal client state around `make_client_fn`'s client function.

    Args:
      model_fn: Builds the model.
      make_client_fn: Builds the client function (see `ClientFn`) inside the client computation.
      shared: Per trainable variable, whether it is aggregated (its delta is in the update).
      personal_part: Trainable tensors (TF or NumPy, in order) -> a client's first personal
        state; applied to the initial global weights.
      server_optimizer: Applied to the aggregated shared delta (personal variables of the
        global model receive a zero update, so they keep their initial values).
      model_aggregator: Aggregates the shared deltas (weighted).
      personal_weights: (global weights, client state) -> the client's own model.
      error_feedback: Sparsify the shared delta with a residual kept on each client (a second
        slot, `error_feedback.RESIDUAL_SLOT`); None: send it as it is.
      secagg: Run the SecAgg protocol on the shared delta (`model_aggregator` is then the
        structural secure mean whose packing it masks); the personal part never leaves.

    Returns:
      The process; its `client_computation` is `(weights, personal, round) -> (result,
      metrics, personal)`.
    """
    from fl_tff.algorithms import client_work as client_work_lib  # noqa: PLC0415 (import cycle)
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    data_type = client_work_lib.client_round_type(types.input_spec)
    trainable_specs = list(types.trainable_specs)
    if len(shared) != len(trainable_specs):
        raise ValueError(f'shared has {len(shared)} entries for {len(trainable_specs)} variables')
    shared_positions = [i for i, s in enumerate(shared) if s]
    shared_type = tff.types.tensorflow_to_type(
        tuple(trainable_specs[i] for i in shared_positions))
    personal_type = tff.types.tensorflow_to_type(personal_part(trainable_specs))
    trainable_structure = tff.types.type_to_tf_tensor_specs(weights_type.trainable)

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    @tff.tensorflow.computation(weights_type, personal_type, data_type)
    def client_update(initial_weights, personal, dataset):
        result, metrics, new_personal = make_client_fn()(initial_weights, tuple(personal), dataset)
        return result, metrics, tuple(new_personal)

    def make_first_client_fn():
        # A client that never trained: its personal state from the global weights.
        client_fn = make_client_fn()

        def first_client_update(initial_weights, dataset):
            first = personal_part(tf.nest.flatten(initial_weights.trainable))
            result, metrics, _ = client_fn(initial_weights, tuple(first), dataset)
            return result, metrics
        return first_client_update

    # The composed process (clients without stored state) gives initialize, weights and
    # hyperparameters, and the state types; rounds run `next_fn` below.
    client_work = client_work_lib.build_client_work(model_fn, make_first_client_fn)

    @tff.tensorflow.computation(shared_type)
    def expand(update):
        # The full trainable update: the shared deltas in place, zeros for personal variables.
        parts = [tf.zeros(s.shape, s.dtype) for s in trainable_specs]
        for position, delta in zip(shared_positions, update):
            parts[position] = delta
        return tf.nest.pack_sequence_as(trainable_structure, parts)

    inner_finalizer = finalizer_lib.build_server_update_finalizer(server_optimizer, weights_type)

    @tff.federated_computation(inner_finalizer.initialize.type_signature.result,
                               tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(shared_type, tff.SERVER))
    def finalizer_next(state, weights, update):
        return inner_finalizer.next(state, weights, tff.federated_map(expand, update))

    finalizer = tff.learning.templates.FinalizerProcess(inner_finalizer.initialize, finalizer_next)
    aggregator = aggregator_chain.as_weighted(model_aggregator).create(shared_type, tff.TensorType(np.float32))
    distributor = tff.learning.templates.build_broadcast_process(weights_type)

    def train(r: round_composer.Round) -> round_composer.Stage:
        result, metrics, new_personal = tff.federated_map(
            client_update, (r.distributed.result, r.values[PERSONAL_SLOT], r.client_data))
        return round_composer.client_work_stage(r, result, metrics, metrics_aggregation_fn,
                                                client_states={PERSONAL_SLOT: new_personal})

    initial = tf.nest.flatten(initial_model_weights_fn().trainable)
    stages = round_composer.RoundStages(
        round_composer.LearningParts(initial_model_weights_fn, distributor, client_work,
                                     aggregator, finalizer),
        client_values={PERSONAL_SLOT: personal_type}, slots=(PERSONAL_SLOT,), train=train,
        initial_states={PERSONAL_SLOT: [np.asarray(t) for t in personal_part(initial)]})
    stages, secagg_round = round_wrappers.wrap(stages, round_wrappers.Wrappers(
        error_feedback, secagg, model_aggregator))
    personal = dict(client_computation=client_update, personal_weights=personal_weights,
                    shared=shared)
    if secagg_round is not None:
        return PersonalizedSecAggProcess(secagg_round, secagg, **personal)
    return PersonalizedLearningProcess(stages, **personal)


class PersonalParts:
    """What a process whose clients keep a personal part adds (implements `PersonalizedProcess`
    and `round_hooks.SendsPartOfModel`), to a `StatefulLearningProcess` or a SecAgg process."""

    slot = PERSONAL_SLOT  # Its personal part (it may have other slots, e.g. residuals).

    def _set_personal(self, client_computation: tff.Computation,
                      personal_weights: Callable[..., tff.learning.models.ModelWeights],
                      shared: Sequence[bool]) -> None:
        self.client_computation = client_computation
        self._personal_weights = personal_weights
        self._shared = tuple(shared)

    @property
    def uplink_positions(self) -> list[int]:
        """The shared variables' positions: what a client update carries
        (`round_hooks.SendsPartOfModel`)."""
        return [i for i, s in enumerate(self._shared) if s]

    def personal_weights(self, global_weights: tff.learning.models.ModelWeights,
                         client_state: client_state.FlatState) -> tff.learning.models.ModelWeights:
        return self._personal_weights(global_weights, client_state)


class PersonalizedLearningProcess(PersonalParts, client_state.StatefulLearningProcess):
    """A `StatefulLearningProcess` whose client state includes a personal model part."""

    def __init__(self, stages: round_composer.RoundStages, *, client_computation: tff.Computation,
                 personal_weights: Callable[..., tff.learning.models.ModelWeights],
                 shared: Sequence[bool]):
        client_state.StatefulLearningProcess.__init__(self, stages)
        self._set_personal(client_computation, personal_weights, shared)


class PersonalizedSecAggProcess(PersonalParts, tff_round.SecAggLearningProcess):
    """A SecAgg process (`tff_round.SecAggLearningProcess`) whose client state includes a
    personal model part: the protocol masks the shared delta only."""

    def __init__(self, secagg: tff_round.SecAggRound, settings: tff_round.SecAggSettings, *,
                 client_computation: tff.Computation,
                 personal_weights: Callable[..., tff.learning.models.ModelWeights],
                 shared: Sequence[bool]):
        tff_round.SecAggLearningProcess.__init__(self, secagg, settings)
        self._set_personal(client_computation, personal_weights, shared)


def replace_trainable(weights: tff.learning.models.ModelWeights, positions: Sequence[int],
                      values: Sequence[np.ndarray]) -> tff.learning.models.ModelWeights:
    """`weights` with trainable tensors at `positions` replaced by `values` (NumPy)."""
    trainable = [np.asarray(t) for t in weights.trainable]
    for position, value in zip(positions, values, strict=True):
        trainable[position] = np.asarray(value)
    return tff.learning.models.ModelWeights(trainable, list(weights.non_trainable))


def finite_or_old(new: Sequence[tf.Tensor], old: Sequence[tf.Tensor], keep: tf.Tensor) -> tuple:
    """`new` when `keep` (and every value of `new` is finite), else `old`: a client whose
    training diverged keeps its personal state."""
    keep = tf.logical_and(keep, tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(t)) for t in new] or [tf.constant(True)]))
    return tuple(tf.where(keep, n, o) for n, o in zip(new, old))
