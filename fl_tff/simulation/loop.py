"""The one training loop every experiment uses: rounds, evaluation, one metrics row per round."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

import tensorflow_federated as tff

from fl_tff import client_state
from fl_tff import rounds as rounds_lib
from fl_tff.simulation import async_schedule
from fl_tff.simulation import selection as selection_lib
from fl_tff.simulation.round_metrics import Metrics, flatten_training_metrics


class StopTraining(Exception):
    """Raised by a `before_round` hook to end training before that round (e.g. a spent privacy
    budget); the loop returns normally with the rounds run so far."""


# A `before_round` column that, when true, makes this round the last (evaluated) one.
LAST_ROUND = 'last_round'


TIMING_COLUMNS = ('round_seconds', 'eval_seconds', 'elapsed_seconds')

# The training columns of a round that trained nothing (everyone dropped, or the secure
# aggregation protocol aborted): NaN by design, not divergence.
NO_TRAINING = {'train_loss': float('nan'), 'train_accuracy': float('nan'), 'train_examples': 0}


def run_training(
        process: Any,
        training_selection_fn: Callable[[int], list],
        *,
        rounds: int,
        evaluation_fn: Optional[Callable[[tff.learning.models.ModelWeights], Metrics]] = None,
        eval_every: int = 1,
        on_round: Optional[Callable[[Metrics, Any], None]] = None,
        initial_state: Any = None,
        start_round: int = 1,
        before_round: Optional[Callable[[Any, bool], Metrics]] = None,
        client_states: Optional[Mapping[str, client_state.ClientStateStore]] = None,
        measure_next: Optional[Callable[[], Callable[[], Metrics]]] = None,
        versions: Optional[async_schedule.VersionStore] = None,
) -> tuple[Any, list[Metrics]]:
    """Runs rounds `start_round`..`rounds` of `process`; evaluates every `eval_every` rounds and
    at the end.

    Every round is `run_round` of the process as a `fl_tff.rounds.RoundProcess`
    (`rounds.as_rounds`: a TFF `LearningProcess` runs its `next`), given what its `needs`
    declare: the round's plan, the participants' states in each client-state slot, looked up in
    `client_states` (slot -> store; new stores when None) and stored back afterwards (the
    simulation, not the process, keeps them), and, for asynchronous training, each buffered
    client's start weights from `versions` (an `async_schedule.VersionStore`; a new one holding
    the initial weights when None), which then keeps the new weights while clients in flight
    need them.

    `on_round(row, state)` receives each round's flat metrics (after evaluation) and the new
    state, for printing, saving and checkpointing; it may raise to stop the run.
    `measure_next()` is called just before each round and returns a function called just after
    it, whose columns join the round's row (e.g. the bytes sent to workers).
    Returns the final state and the rows of the rounds run.
    """
    round_process = rounds_lib.as_rounds(process)
    needs = round_process.needs
    selection = selection_lib.as_selection(training_selection_fn)
    if (needs.client_states or needs.plan or before_round is not None) and not selection.planned:
        raise TypeError('before_round hooks (the ledgers and the privacy budget stop) charge '
                        'each round\'s plan, and a process with client state or a protocol over '
                        'its cohort needs it: select clients with a PlannedSelection such as '
                        'ClientSelector, which plans and names them')
    client_states = dict(client_states or {})
    for slot in needs.client_states:
        store = client_states.get(slot)
        if store is None and start_round > 1:
            raise ValueError(f'resuming a process with client state needs the store of its '
                             f'checkpoint (client_states={{{slot!r}: ...}})')
        if store is not None and start_round == 1 and len(store):
            raise ValueError(f'a fresh run needs an empty client-state store; the one of slot '
                             f'{slot!r} holds {len(store)} clients\' states from another run')
    if needs.start_weights:
        if not selection.buffers:
            raise TypeError('an asynchronous process needs an AsyncSelector, which plans its '
                            'buffers on the simulated clock')
        if versions is None and start_round > 1:
            raise ValueError('resuming an asynchronous run needs the start weights of its '
                             'checkpoint (versions=)')
    with contextlib.ExitStack() as cleanup:
        for slot, initial in needs.client_states.items():
            if slot not in client_states:
                client_states[slot] = client_state.ClientStateStore(initial)
                cleanup.callback(client_states[slot].close)  # Ours: removed when the loop ends.
        return _run_rounds(round_process, selection, rounds, evaluation_fn, eval_every,
                           on_round, initial_state, start_round, before_round, client_states,
                           measure_next, versions)


def _run_rounds(process, selection, rounds, evaluation_fn, eval_every, on_round, initial_state,
                start_round, before_round, client_states, measure_next, versions):
    """The loop of `run_training`, its arguments checked."""
    state = process.initialize() if initial_state is None else initial_state
    needs = process.needs
    if needs.start_weights and versions is None:
        versions = async_schedule.VersionStore(process.get_model_weights(state))
    history: list[Metrics] = []
    start = time.monotonic()
    for round_num in range(start_round, rounds + 1):
        t0 = time.monotonic()
        row: Metrics = {'round': round_num}
        last = round_num == rounds
        evaluate = evaluation_fn is not None and (round_num % eval_every == 0 or last)
        plan = selection.plan(round_num)
        if plan is not None:  # Report participation.
            if before_round is not None:
                try:
                    extra = dict(before_round(plan, evaluate))
                except StopTraining:
                    break
                last = bool(extra.pop(LAST_ROUND, False)) or last
                evaluate = evaluation_fn is not None and (evaluate or last)
                row.update(extra)
            row.update(plan.counts())
        clients = selection.clients(round_num, plan)
        client_ids = [cid for cid, _ in plan.participants] if plan is not None else []
        row['clients'] = len(clients)
        if clients:
            measured = measure_next() if measure_next is not None else None
            inputs = rounds_lib.RoundInputs(
                round_num, plan, client_ids,
                {slot: [client_states[slot].get(c) for c in client_ids]
                 for slot in needs.client_states},
                [versions.get(v) for v in plan.start_versions] if needs.start_weights else ())
            output = process.run_round(state, clients, inputs)
            problem = rounds_lib.check_output(inputs, output, needs)
            if problem:
                raise ValueError(f'round {round_num}: {problem}')
            for slot, states in output.client_states.items():
                client_states[slot].update(client_ids, states)
            if needs.start_weights:
                versions.put(round_num, process.get_model_weights(output.state),
                             keep=plan.live_versions)
            row.update(output.columns)
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
