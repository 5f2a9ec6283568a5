"""One composer for every round: TFF's composition (distributor -> client work -> aggregator ->
finalizer) with the stages a round may replace, and the per-client and server values it takes.

TFF's `tff.learning.templates.compose_learning_process` fixes `next(state, client_data)`. Rounds
that need more (client-state slots such as error-feedback residuals, SCAFFOLD's control
variates and personal layers; start weights and staleness scales of asynchronous clients; the
SecAgg protocol's masks and the server's correction) declare it here instead of writing their
own copy of the composer:

* `client_values`: name -> type of a CLIENTS-placed input (one per participant, in the order of
  the client data). `next` takes them packed in one parameter, `client_values`, a struct of
  these names per client (so they travel to the workers together: `fl_tff.runtime.worker_values`);
  stages read each by name in `Round.values`. Those named in `slots` are client-state slots:
  the round returns the participants' new values of all slots packed the same way (a struct of
  the slot names per client, CLIENTS-placed) after the state and metrics.
* `server_values`: name -> type of a SERVER-placed input, one parameter each after
  `client_values`.
* stages, each a function of the round traced so far (`Round`) that returns a `Stage`; a stage
  left as None is TFF's: `distribute` broadcasts the global model, `train` runs the client
  work, `upload` sends each client's update and weight as they are, `aggregate` runs the
  aggregator on them and `finalize` the finalizer.
* `side_aggregator`: a second aggregation, of a value each client uploads beside its update
  (the train stage's `Stage.side`, e.g. SCAFFOLD's control-variate delta), each client
  weighing 1 (or, with `side_weighted`, its update's weight: MIME-lite's gradients); its
  state sits beside the model aggregator's in the server state, and the default `aggregate`
  stage hands its result and the number of clients aggregated to the finalizer
  (`SideAggregate` in `Stage.extra`). Being declared, not hidden in a stage, the SecAgg
  protocol masks it with the update.

The server state stays TFF's `LearningAlgorithmState` of the same five parts, built here and
nowhere else, so `initialize`, the model weights, checkpoints and evaluators are those of
`compose_learning_process` with the same parts.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np
import tensorflow_federated as tff


@dataclasses.dataclass
class Stage:
    """A stage's output, as federated values.

    Attributes:
      result: What the next stage receives (the distributor's model per client, the client
        work's `ClientResult`s, the upload as (value, weight) per client, the aggregate, the new
        model weights).
      state: The stage's new state (its part of `LearningAlgorithmState`).
      measurements: Its metrics, or None to leave its key out of the round's metrics.
      client_states: Slot -> the participants' new states in it (CLIENTS-placed).
      extra: Anything a later stage of the same round reads (the default aggregate stage's
        `SideAggregate`, which SCAFFOLD's finalizer reads).
      side: The train and upload stages' side upload per client (CLIENTS-placed), which the
        round's `side_aggregator` aggregates.
    """

    result: Any
    state: Any
    measurements: Any = None
    client_states: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: Any = None
    side: Any = None


@dataclasses.dataclass(frozen=True)
class SideAggregate:
    """What the side aggregation gives the finalizer (SERVER-placed).

    Attributes:
      result: The side aggregator's result (a mean, for the default chain).
      clients: How many clients were aggregated (float32): m, the count a secure sum's server
        also learns.
    """

    result: Any
    clients: Any


@dataclasses.dataclass
class Round:
    """A round as it is traced: the server state, the client data, the declared values by name,
    and each stage's output once it has run."""

    state: Any
    client_data: Any
    values: dict[str, Any]
    distributed: Optional[Stage] = None
    work: Optional[Stage] = None
    upload: Optional[Stage] = None
    aggregated: Optional[Stage] = None
    final: Optional[Stage] = None


StageFn = Callable[[Round], Stage]


@dataclasses.dataclass(frozen=True)
class LearningParts:
    """The five parts of TFF's composition (`compose_learning_process`'s arguments)."""

    initial_model_weights_fn: tff.Computation
    distributor: tff.templates.MeasuredProcess
    client_work: tff.learning.templates.ClientWorkProcess
    aggregator: tff.templates.AggregationProcess
    finalizer: tff.learning.templates.FinalizerProcess


@dataclasses.dataclass(frozen=True)
class RoundStages:
    """A round declared as stages (see the module docstring).

    Attributes:
      parts: TFF's five parts; they give the server state and the default stages.
      client_values: Name -> TFF type of each CLIENTS-placed input, in the order of the
        struct `next` takes them in.
      server_values: Name -> TFF type of each SERVER-placed input, `next`'s parameters after
        the client values.
      slots: The client values that are client-state slots (returned anew, in this order).
      client_inputs: Name -> `(round_num, client_ids) -> [one flattened value per client]`
        for the client values that are neither slots nor supplied by the process itself
        (deterministic per-client inputs such as seeds).
      initial_states: Slot -> a client's state in it before it first trains (flattened);
        zeros of the slot's type for a slot not named.
      side_aggregator: Aggregates the clients' side uploads (`Stage.side`) with weight 1,
        its state beside `parts.aggregator`'s (None: the round uploads no side value).
      side_weighted: The side aggregator weighs each client's side upload as its update (the
        upload stage's weight) instead of 1.
      distribute, train, upload, aggregate, finalize: The stages replaced (None: TFF's).
    """

    parts: LearningParts
    client_values: Mapping[str, tff.Type] = dataclasses.field(default_factory=dict)
    server_values: Mapping[str, tff.Type] = dataclasses.field(default_factory=dict)
    slots: Sequence[str] = ()
    client_inputs: Mapping[str, Callable[[int, Sequence[str]], list]] = dataclasses.field(
        default_factory=dict)
    initial_states: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    side_aggregator: Optional[tff.templates.AggregationProcess] = None
    side_weighted: bool = False
    distribute: Optional[StageFn] = None
    train: Optional[StageFn] = None
    upload: Optional[StageFn] = None
    aggregate: Optional[StageFn] = None
    finalize: Optional[StageFn] = None


def client_work_stage(r: Round, result: Any, metrics: Any,
                      metrics_aggregation_fn: Callable[[Any], Any], **fields: Any) -> Stage:
    """A train stage's output after the clients' own computation: their `ClientResult`s, the
    client work's state unchanged, their metrics aggregated as `train` (as TFF's client works
    report them); `fields` (`client_states`, `side`, `extra`) as `Stage` takes them."""
    return Stage(result, r.state.client_work,
                 tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(metrics))),
                 **fields)


def learning_state(model_weights, distributor, client_work, aggregator, finalizer):
    """The server state of a round (SERVER-placed parts zipped): TFF's `LearningAlgorithmState`,
    built here only."""
    return tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        model_weights, distributor, client_work, aggregator, finalizer))


def _distribute(r: Round, stages: RoundStages) -> Stage:
    out = stages.parts.distributor.next(r.state.distributor, r.state.global_model_weights)
    return Stage(out.result, out.state, out.measurements)


def _train(r: Round, stages: RoundStages) -> Stage:
    out = stages.parts.client_work.next(r.state.client_work, r.distributed.result,
                                        r.client_data)
    return Stage(out.result, out.state, out.measurements)


def _upload(r: Round, stages: RoundStages) -> Stage:
    del stages
    return Stage((r.work.result.update, r.work.result.update_weight), (), side=r.work.side)


def _aggregate(r: Round, stages: RoundStages) -> Stage:
    value, weight = r.upload.result
    if stages.side_aggregator is None:
        out = stages.parts.aggregator.next(r.state.aggregator, value, weight)
        return Stage(out.result, out.state, out.measurements)
    out = stages.parts.aggregator.next(r.state.aggregator[0], value, weight)
    ones = tff.federated_value(np.float32(1.0), tff.CLIENTS)
    side = stages.side_aggregator.next(r.state.aggregator[1], r.upload.side,
                                       weight if stages.side_weighted else ones)
    return Stage(out.result, tff.federated_zip((out.state, side.state)), out.measurements,
                 extra=SideAggregate(side.result, tff.federated_sum(ones)))


def _finalize(r: Round, stages: RoundStages) -> Stage:
    out = stages.parts.finalizer.next(r.state.finalizer, r.state.global_model_weights,
                                      r.aggregated.result)
    return Stage(out.result, out.state, out.measurements)


def aggregator_process(stages: RoundStages) -> tff.templates.AggregationProcess:
    """The aggregator whose state the server keeps: `parts.aggregator`, or with a side
    aggregator both states paired (its own `next` aggregates the update and leaves the side
    state alone: it gives TFF's composition its types; the aggregate stage runs both)."""
    model, side = stages.parts.aggregator, stages.side_aggregator
    if side is None:
        return model

    @tff.federated_computation
    def init_fn():
        return tff.federated_zip((model.initialize(), side.initialize()))

    _, value_type, weight_type = model.next.type_signature.parameter

    @tff.federated_computation(init_fn.type_signature.result, value_type, weight_type)
    def next_fn(state, value, weight):
        out = model.next(state[0], value, weight)
        return tff.templates.MeasuredProcessOutput(
            tff.federated_zip((out.state, state[1])), out.result, out.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def composed_parts(stages: RoundStages) -> LearningParts:
    """The five parts TFF's composition of the round's server state takes (the aggregator's
    state includes the side aggregator's)."""
    return dataclasses.replace(stages.parts, aggregator=aggregator_process(stages))


_DEFAULTS = {'distribute': _distribute, 'train': _train, 'upload': _upload,
             'aggregate': _aggregate, 'finalize': _finalize}


def stage_fn(stages: RoundStages, name: str) -> StageFn:
    """The stage `name` ('distribute', 'train', 'upload', 'aggregate' or 'finalize') of
    `stages`: the one it declares, else TFF's over its parts. A wrapper that replaces a stage
    calls this for the one it wraps."""
    custom = getattr(stages, name)
    if custom is not None:
        return custom
    default = _DEFAULTS[name]
    return lambda r: default(r, stages)


def compose(stages: RoundStages) -> tuple[tff.learning.templates.LearningProcess, tff.Computation]:
    """The round of `stages`.

    Returns:
      `(composed, next_fn)`: TFF's composition of the same parts (its `initialize`, weights and
      hyperparameters are the process's) and the round's federated computation
      `next_fn(state, client_data[, client_values][, *server values])` (`client_values` when
      any are declared), which returns `LearningProcessOutput(state, metrics)` without slots,
      else `(state, metrics, new slot states)`.

    Raises:
      ValueError: A slot that is not a client value, or value names that repeat or clash
        with `state` / `client_data`.
    """
    names = [*stages.client_values, *stages.server_values]
    if len(set(names)) != len(names) or {'state', 'client_data', 'client_values'} & set(names):
        raise ValueError('value names must be distinct and not state, client_data or '
                         f'client_values: {names}')
    unknown = [s for s in stages.slots if s not in stages.client_values]
    if unknown:
        raise ValueError(f'slots {unknown} are not among the client values '
                         f'{list(stages.client_values)}')
    bad_inputs = [n for n in stages.client_inputs
                  if n not in stages.client_values or n in stages.slots]
    if bad_inputs:
        raise ValueError(f'client inputs {bad_inputs} must be client values that are not slots')
    parts = composed_parts(stages)
    composed = tff.learning.templates.compose_learning_process(
        parts.initial_model_weights_fn, parts.distributor, parts.client_work, parts.aggregator,
        parts.finalizer)
    state_type, data_type = composed.next.type_signature.parameter[:2]
    value_types = [tff.FederatedType(t, tff.SERVER) for t in stages.server_values.values()]
    client_names = list(stages.client_values)
    if client_names:
        value_types.insert(0, tff.FederatedType(
            tff.StructType(list(stages.client_values.items())), tff.CLIENTS))

    run = {name: stage_fn(stages, name) for name in _DEFAULTS}

    # TFF takes no varargs: `next` gets one named parameter per server value.
    parameters = ('state', 'client_data', *(['client_values'] if client_names else []),
                  *stages.server_values)
    signature = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in parameters])

    def next_body(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        values = {name: bound[name] for name in stages.server_values}
        values.update({name: getattr(bound['client_values'], name) for name in client_names})
        r = Round(bound['state'], bound['client_data'], values)
        r.distributed = run['distribute'](r)
        r.work = run['train'](r)
        r.upload = run['upload'](r)
        r.aggregated = run['aggregate'](r)
        r.final = run['finalize'](r)
        new_state = learning_state(r.final.result, r.distributed.state, r.work.state,
                                   r.aggregated.state, r.final.state)
        measurements = tff.federated_zip(collections.OrderedDict(
            (key, stage.measurements) for key, stage in (
                ('distributor', r.distributed), ('client_work', r.work),
                ('aggregator', r.aggregated), ('finalizer', r.final))
            if stage.measurements is not None))
        if not stages.slots:
            return tff.learning.templates.LearningProcessOutput(new_state, measurements)
        new_states = {}
        for stage in (r.distributed, r.work, r.upload, r.aggregated, r.final):
            new_states.update(stage.client_states)
        missing = [s for s in stages.slots if s not in new_states]
        if missing:
            raise ValueError(f'no stage returned new states for slots {missing}')
        return (new_state, measurements, tff.federated_zip(collections.OrderedDict(
            (s, new_states[s]) for s in stages.slots)))

    next_body.__signature__ = signature
    next_fn = tff.federated_computation(state_type, data_type, *value_types)(next_body)
    return composed, next_fn
