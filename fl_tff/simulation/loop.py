"""The one training loop every experiment uses: rounds, evaluation, one metrics row per round."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import tensorflow_federated as tff

from fl_tff import client_state
from fl_tff.algorithms import asynchronous
from fl_tff.simulation import async_schedule
from fl_tff.models.model_fn import accuracy_metric

Metrics = dict[str, Any]


@runtime_checkable
class PlannedSelection(Protocol):
    """A client selection that plans each round before building its datasets (e.g.
    `ClientSelector`): the loop reports the plan's participation and passes it to `before_round`
    hooks (the ledgers)."""

    def plan(self, round_num: int) -> Any:
        """The round's plan: who is selected and who contributes (`RoundPlan`)."""

    def client_inputs(self, plan: Any) -> list:
        """What the process's `next` takes for the participants (datasets, or client tasks for
        a process composed with a dataset computation), in `plan.participants` order."""


@runtime_checkable
class ProcessForPlan(Protocol):
    """A process whose round needs the whole plan (who was selected, who contributed), e.g.
    `fl_tff.secagg.tff_round.SecAggLearningProcess`, whose cohort runs a protocol."""

    def next_for_plan(self, state: Any, client_data: list, plan: Any) -> Any:
        """One round for `plan.participants`' `client_data`; the output has `state`, `metrics`
        (None when the round was aborted and the model is unchanged) and `columns` (the round's
        own metric columns)."""


class StopTraining(Exception):
    """Raised by a `before_round` hook to end training before that round (e.g. a spent privacy
    budget); the loop returns normally with the rounds run so far."""


# A `before_round` column that, when true, makes this round the last (evaluated) one.
LAST_ROUND = 'last_round'


TIMING_COLUMNS = ('round_seconds', 'eval_seconds', 'elapsed_seconds')

# The training columns of a round that trained nothing (everyone dropped, or the secure
# aggregation protocol aborted): NaN by design, not divergence.
NO_TRAINING = {'train_loss': float('nan'), 'train_accuracy': float('nan'), 'train_examples': 0}


def flatten_training_metrics(metrics) -> Metrics:
    """The scalar columns we report from a LearningProcess's nested metrics.

    When every client's update was non-finite (all dropped, metrics reset) the train loss and
    accuracy are NaN, not TFF's 0/0 = 0, so a diverged run cannot look like a converged one.
    """
    train = metrics['client_work']['train']
    examples = int(train['num_examples'])
    row = {'train_loss': float(train['loss']) if examples else float('nan'),
           'train_accuracy': accuracy_metric(train) if examples else float('nan'),
           'train_examples': examples}
    finalizer = metrics.get('finalizer') or {}
    if 'update_non_finite' in finalizer:
        row['server_update_skipped'] = int(finalizer['update_non_finite'])
    dp_query = (metrics.get('aggregator') or {}).get('dp_query_metrics') or {}
    if 'clip' in dp_query:  # Adaptive clipping's current clip norm.
        row['dp_clip'] = float(dp_query['clip'])
    clipped = _find(metrics.get('aggregator'), 'secure_clipped_fraction')
    if clipped is not None:  # Values clipped to the secure sum's range.
        row['secure_clipped_fraction'] = float(clipped)
    return row


def _find(metrics, key: str):
    """The value under `key` anywhere in nested metrics (aggregators nest theirs), or None."""
    if not isinstance(metrics, Mapping):
        return None
    for name, value in metrics.items():
        found = value if name == key else _find(value, key)
        if found is not None:
            return found
    return None


def run_training(
        process: tff.learning.templates.LearningProcess,
        training_selection_fn: Callable[[int], list],
        *,
        rounds: int,
        evaluation_fn: Optional[Callable[[tff.learning.models.ModelWeights], Metrics]] = None,
        eval_every: int = 1,
        on_round: Optional[Callable[[Metrics, Any], None]] = None,
        initial_state: Any = None,
        start_round: int = 1,
        before_round: Optional[Callable[[Any, bool], Metrics]] = None,
        client_states: Optional[client_state.ClientStateStore] = None,
        measure_next: Optional[Callable[[], Callable[[], Metrics]]] = None,
        versions: Optional[Any] = None,
) -> tuple[Any, list[Metrics]]:
    """Runs rounds `start_round`..`rounds` of `process`; evaluates every `eval_every` rounds and
    at the end.

    `on_round(row, state)` receives each round's flat metrics (after evaluation) and the new
    state, for printing, saving and checkpointing; it may raise to stop the run.
    For a process whose clients keep state (`client_state.ProcessWithClientState`), the loop
    looks the participants' states up in `client_states` (a new store when None), passes them
    to `next` and stores the new ones: the simulation, not the process, keeps them.
    `measure_next()` is called just before each round's `next` and returns a function called
    just after it, whose columns join the round's row (e.g. the bytes sent to workers).
    For an asynchronous process (`asynchronous.BufferedProcess`, with an `AsyncSelector`) a
    round is one server update: the loop passes each buffered client's start weights from
    `versions` (an `async_schedule.VersionStore`; a new one holding the initial weights when
    None) and its staleness, and keeps the new weights while clients in flight need them.
    Returns the final state and the rows of the rounds run.
    """
    if isinstance(process, client_state.ProcessWithClientState):
        if not isinstance(training_selection_fn, PlannedSelection):
            raise TypeError('this process keeps client state: select clients with a '
                            'PlannedSelection such as ClientSelector, which names them')
        if client_states is None and start_round > 1:
            raise ValueError('resuming a process with client state needs the store of its '
                             'checkpoint (client_states=)')
        if client_states is not None and start_round == 1 and len(client_states):
            raise ValueError('a fresh run needs an empty client-state store; this one holds '
                             f'{len(client_states)} clients\' states from another run')
    if isinstance(process, ProcessForPlan) and not isinstance(training_selection_fn,
                                                               PlannedSelection):
        raise TypeError('this process runs each round for a plan: select clients with a '
                        'PlannedSelection such as ClientSelector')
    if before_round is not None and not isinstance(training_selection_fn, PlannedSelection):
        raise TypeError('before_round hooks (the privacy ledger and its budget stop, the byte '
                        'ledger) charge each round\'s plan: select clients with a '
                        'PlannedSelection such as ClientSelector, not a plain callable')
    if isinstance(process, asynchronous.BufferedProcess):
        if not isinstance(training_selection_fn, async_schedule.AsyncSelector):
            raise TypeError('an asynchronous process needs an AsyncSelector, which plans its '
                            'buffers on the simulated clock')
        if versions is None and start_round > 1:
            raise ValueError('resuming an asynchronous run needs the start weights of its '
                             'checkpoint (versions=)')
    with contextlib.ExitStack() as cleanup:
        if isinstance(process, client_state.ProcessWithClientState) and client_states is None:
            client_states = client_state.ClientStateStore(process.initial_client_state())
            cleanup.callback(client_states.close)  # Ours: removed when the loop ends.
        return _run_rounds(process, training_selection_fn, rounds, evaluation_fn, eval_every,
                           on_round, initial_state, start_round, before_round, client_states,
                           measure_next, versions)


def _run_rounds(process, training_selection_fn, rounds, evaluation_fn, eval_every, on_round,
                initial_state, start_round, before_round, client_states, measure_next, versions):
    """The loop of `run_training`, its arguments checked."""
    state = process.initialize() if initial_state is None else initial_state
    if isinstance(process, asynchronous.BufferedProcess) and versions is None:
        versions = async_schedule.VersionStore(process.get_model_weights(state))
    history: list[Metrics] = []
    start = time.monotonic()
    for round_num in range(start_round, rounds + 1):
        t0 = time.monotonic()
        row: Metrics = {'round': round_num}
        last = round_num == rounds
        evaluate = evaluation_fn is not None and (round_num % eval_every == 0 or last)
        if isinstance(training_selection_fn, PlannedSelection):  # Report participation.
            plan = training_selection_fn.plan(round_num)
            if before_round is not None:
                try:
                    extra = dict(before_round(plan, evaluate))
                except StopTraining:
                    break
                last = bool(extra.pop(LAST_ROUND, False)) or last
                evaluate = evaluation_fn is not None and (evaluate or last)
                row.update(extra)
            clients = training_selection_fn.client_inputs(plan)
            client_ids = [cid for cid, _ in plan.participants]
            row.update(plan.counts())
        else:
            clients, client_ids = training_selection_fn(round_num), None
        row['clients'] = len(clients)
        if clients:
            measured = measure_next() if measure_next is not None else None
            if isinstance(process, client_state.ProcessWithClientState):
                output = process.next(state, clients, client_ids=client_ids, round_num=round_num,
                                      client_states=[client_states.get(c) for c in client_ids])
                client_states.update(client_ids, output.client_states)
            elif isinstance(process, asynchronous.BufferedProcess):
                output = process.next(state, clients,
                                      start_weights=[versions.get(v) for v in plan.start_versions],
                                      staleness=plan.staleness)
                versions.put(round_num, process.get_model_weights(output.state),
                             keep=plan.live_versions)
            elif isinstance(process, ProcessForPlan):
                output = process.next_for_plan(state, clients, plan)
                row.update(output.columns)
            else:
                output = process.next(state, clients)
            if measured is not None:
                row.update(measured())
            state = output.state
            if output.metrics is None:  # Aborted: the model is unchanged this round.
                row.update(NO_TRAINING)
            else:
                row.update(flatten_training_metrics(output.metrics))
        else:  # Every selected client dropped out: the model is unchanged this round.
            row.update(NO_TRAINING)
        row['round_seconds'] = time.monotonic() - t0
        if evaluate:
            t1 = time.monotonic()
            row.update(evaluation_fn(process.get_model_weights(state)))
            row['eval_seconds'] = time.monotonic() - t1
        row['elapsed_seconds'] = time.monotonic() - start
        history.append(row)
        if on_round is not None:
            on_round(row, state)
        if last:
            break
    return state, history
