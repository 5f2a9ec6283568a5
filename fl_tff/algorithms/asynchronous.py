"""What asynchronous algorithms (FedBuff, FedAsync) share: one server update from a buffer of
client updates, each trained from its own, possibly stale, start model.

`compose_buffered` is TFF's composition (`fl_tff.round_composer`) whose distribute stage is the
clients' own start weights: the buffer's clients receive them CLIENTS-placed, run the client work (our local SGD), scale their
update by the server's staleness factor, and the model aggregator (any: secure sums,
compression, robust) and our finalizer apply them. Which clients are in a buffer, and how stale
they are, is the simulated clock's business (`fl_tff.simulation.async_schedule`); the loop
keeps the start weights (`VersionStore`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import client_state, options, round_composer, round_wrappers, rounds
from fl_tff.algorithms import fedavg
from fl_tff.models.model_fn import ModelFn
from fl_tff.secagg import tff_round

STALENESS_WEIGHTINGS = ('polynomial', 'constant')


def staleness_factor(weighting: str, staleness: int, exponent: float = 0.5) -> float:
    """The factor an update of `staleness` is scaled by: 1 (`constant`), or (1 + s)^-a
    (`polynomial`, a = 0.5 as in FedBuff and FedAsync's polynomial s(t - tau))."""
    if weighting == 'constant':
        return 1.0
    if weighting == 'polynomial':
        return float((1.0 + staleness) ** -exponent)
    raise ValueError(f'unknown staleness weighting {weighting!r}; valid choices: '
                     f'{", ".join(STALENESS_WEIGHTINGS)}')


@runtime_checkable
class BufferedProcess(Protocol):
    """A process whose `next` applies one buffer of client updates trained from their own start
    weights (the loop passes them; see `AsyncLearningProcess.next`)."""

    def scale(self, staleness: int) -> float:
        """The factor an update of `staleness` is scaled by."""

    def next(self, state: Any, client_data: list, *,
             start_weights: Sequence[tff.learning.models.ModelWeights],
             staleness: Sequence[int]) -> tff.learning.templates.LearningProcessOutput:
        """One server update."""


@dataclasses.dataclass(frozen=True)
class BufferValues:
    """A buffer's per-client values (`rounds.InputValues`): each client's start model and the
    factor its update is scaled by, from its staleness in the plan."""

    scale_fn: Callable[[int], float]
    names: tuple[str, ...] = ('start_weights', 'scale')
    needs: rounds.RoundNeeds = rounds.RoundNeeds(plan=True, start_weights=True)

    def of(self, start_weights: Sequence[tff.learning.models.ModelWeights],
           staleness: Sequence[int]) -> dict[str, list]:
        """The values for clients that started from `start_weights` with `staleness`."""
        if len(start_weights) != len(staleness):
            raise ValueError(f'{len(start_weights)} start weights and {len(staleness)} staleness '
                             'values: one each per buffered update')
        return {'start_weights': [[*w.trainable, *w.non_trainable] for w in start_weights],
                'scale': [np.float32(self.scale_fn(int(s))) for s in staleness]}

    def values(self, inputs: rounds.RoundInputs) -> dict[str, list]:
        return self.of(inputs.start_weights, inputs.plan.staleness)


class AsyncLearningProcess(client_state.StagedProcess):
    """A learning process for asynchronous training (implements `BufferedProcess` and
    `worker_data.ComposableNext`); `initialize`, weights and hyperparameters are those of the
    synchronous composition with the same parts, so checkpoints and evaluators are unchanged.

    Args:
      stages: The round; it takes the client values `start_weights` and `scale`.
      scale_fn: staleness -> the factor the client's update is scaled by.
    """

    PROVIDED = BufferValues.names  # From the loop's start weights and the plan.
    # Each buffered client's start model, and its staleness from the plan.
    needs = BufferValues.needs

    def __init__(self, stages: round_composer.RoundStages, scale_fn: Callable[[int], float]):
        super().__init__(stages)
        self._scale_fn = scale_fn
        self._values = BufferValues(scale_fn)

    def run_round(self, state: Any, client_data: list,
                  inputs: rounds.RoundInputs) -> rounds.RoundOutput:
        """One server update: `next` with the start weights and the plan's staleness."""
        output = self.next(state, client_data, start_weights=inputs.start_weights,
                           staleness=inputs.plan.staleness)
        return rounds.RoundOutput(output.state, output.metrics)

    def scale(self, staleness: int) -> float:
        """The factor an update of `staleness` is scaled by."""
        return self._scale_fn(staleness)

    def next(self, state: Any, client_data: list, *,
             start_weights: Sequence[tff.learning.models.ModelWeights],
             staleness: Sequence[int]) -> tff.learning.templates.LearningProcessOutput:
        """Applies one buffer: client i trains `client_data[i]` from `start_weights[i]`; its
        update is scaled by `scale(staleness[i])`."""
        new_state, metrics, _ = self._run_stages(
            state, client_data, slot_states={}, provided=self._values.of(start_weights, staleness))
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)


def compose_buffered(model_fn: ModelFn, client_work: tff.learning.templates.ClientWorkProcess,
                     server_optimizer: tff.learning.optimizers.Optimizer,
                     model_aggregator: tff.aggregators.AggregationFactory, *,
                     scale_fn: Callable[[int], float],
                     relative_to_current: bool = False,
                     secagg: Optional[tff_round.SecAggSettings] = None) -> client_state.StagedProcess:
    """The asynchronous process around `client_work` (see the module docstring).

    Args:
      model_fn: Builds the model.
      client_work: Trains from CLIENTS-placed weights and returns (start - trained, weight).
      server_optimizer: Applied to the aggregated update.
      model_aggregator: Aggregates the scaled updates with the client weights.
      scale_fn: staleness -> the factor each update is scaled by.
      relative_to_current: Upload `scale x (current - trained)` instead of `scale x (start -
        trained)`: the update moves the current model towards the client's trained one
        (FedAsync's mixing), rather than adding the client's own step (FedBuff).
      secagg: Run the SecAgg protocol among each buffer's updates (`model_aggregator` is then a
        packed secure one: a secure mean, or DP over a secure sum).

    Returns:
      The process: an `AsyncLearningProcess`, or with `secagg` a
      `tff_round.SecAggLearningProcess` that supplies the same buffer values.
    """
    parts = round_composer.LearningParts(
        *fedavg.learning_parts(model_fn, client_work, server_optimizer, model_aggregator))
    weights_type = parts.distributor.next.type_signature.result.result.member

    @tff.tensorflow.computation(weights_type.trainable, np.float32)
    def scaled(update, scale):
        return tf.nest.map_structure(lambda u: u * scale, update)

    @tff.tensorflow.computation(weights_type.trainable, weights_type, weights_type, np.float32)
    def scaled_from_current(update, start, current, scale):
        # current - trained = (current - start) + (start - trained).
        return tf.nest.map_structure(lambda u, s, c: (c - s + u) * scale, update,
                                     start.trainable, current.trainable)

    def distribute(r: round_composer.Round) -> round_composer.Stage:
        # No broadcast: each client trains from its own start weights (no distributor metrics).
        return round_composer.Stage(r.values['start_weights'], r.state.distributor)

    def upload(r: round_composer.Round) -> round_composer.Stage:
        update, scales = r.work.result.update, r.values['scale']
        if relative_to_current:
            current = tff.federated_broadcast(r.state.global_model_weights)
            sent = tff.federated_map(scaled_from_current,
                                     (update, r.values['start_weights'], current, scales))
        else:
            sent = tff.federated_map(scaled, (update, scales))
        return round_composer.Stage((sent, r.work.result.update_weight), ())

    stages = round_composer.RoundStages(
        parts, client_values={'start_weights': weights_type, 'scale': tff.TensorType(np.float32)},
        distribute=distribute, upload=upload)
    if secagg is None:
        return AsyncLearningProcess(stages, scale_fn)
    _, secagg_round = round_wrappers.wrap(stages, round_wrappers.Wrappers(
        secagg=secagg, model_aggregator=model_aggregator))
    return tff_round.SecAggLearningProcess(secagg_round, secagg, BufferValues(scale_fn))


# Parameters both asynchronous algorithms take.
CONCURRENCY = options.Param('concurrency', 20, 'Clients training at once on the simulated clock '
                            '(C); each starts from the model current when it starts.', minimum=1)
STALENESS_WEIGHTING = options.Param(
    'staleness_weighting', 'polynomial', 'How an update is scaled by its staleness s (server '
    'updates since its client started): polynomial 1/sqrt(1+s) (the papers\' default) or '
    'constant 1.', choices=STALENESS_WEIGHTINGS)


def check_asynchronous(config, selection) -> None:
    """What an asynchronous run refuses among the base settings, with the reason."""
    refused = {
        'over_selection': 'there are no rounds to over-select for: a slot is refilled as soon '
                          'as a client finishes',
        'straggler_fraction': 'slow devices come from the device profiles '
                              '(--device_speed_sigma, --device_profiles)',
        'round_deadline': 'there are no rounds to end',
    }
    for name, why in refused.items():
        if getattr(config, name):
            raise options.OptionError(name, f'--algorithm={config.algorithm} is asynchronous: '
                                      f'{why}; leave --{name} at 0')
    if not selection.has(options.FIXED_COHORT):
        raise options.OptionError('client_sampling', f'--algorithm={config.algorithm} draws '
                                  'clients as slots free up, not in rounds of random size: use '
                                  '--client_sampling=uniform')
    if config.concurrency > config.num_clients:
        raise options.OptionError('concurrency', f'{config.concurrency} clients cannot train at '
                                  f'once among --num_clients={config.num_clients}; choose a '
                                  f'value in [1, {config.num_clients}]')


# What an asynchronous algorithm refuses among the other options, by capability.
EXCLUDES = {
    options.ONCE_PER_EPOCH: 'clients start as slots free up, not in epochs of the population',
}
