"""The one training loop every experiment uses: rounds, evaluation, one metrics row per round."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import tensorflow_federated as tff

Metrics = dict[str, Any]
TIMING_COLUMNS = ('round_seconds', 'eval_seconds', 'elapsed_seconds')


def flatten_training_metrics(metrics) -> Metrics:
    """The scalar columns we report from a LearningProcess's nested metrics."""
    train = metrics['client_work']['train']
    return {'train_loss': float(train['loss']),
            'train_accuracy': float(train['sparse_categorical_accuracy']),
            'train_examples': int(train['num_examples'])}


def run_training(
        process: tff.learning.templates.LearningProcess,
        training_selection_fn: Callable[[int], list],
        *,
        rounds: int,
        evaluation_fn: Optional[Callable[[tff.learning.models.ModelWeights], Metrics]] = None,
        eval_every: int = 1,
        on_round: Optional[Callable[[Metrics], None]] = None,
        initial_state: Any = None,
) -> tuple[Any, list[Metrics]]:
    """Runs `rounds` rounds of `process`; evaluates every `eval_every` rounds and at the end.

    `on_round` receives each round's flat metrics (after evaluation) for printing or saving.
    Returns the final state and all rows.
    """
    state = process.initialize() if initial_state is None else initial_state
    history: list[Metrics] = []
    start = time.monotonic()
    for round_num in range(1, rounds + 1):
        t0 = time.monotonic()
        row: Metrics = {'round': round_num}
        if hasattr(training_selection_fn, 'plan'):  # A ClientSelector: report participation.
            plan = training_selection_fn.plan(round_num)
            clients = training_selection_fn.datasets(plan)
            row.update(plan.counts())
        else:
            clients = training_selection_fn(round_num)
        row['clients'] = len(clients)
        if clients:
            output = process.next(state, clients)
            state = output.state
            row.update(flatten_training_metrics(output.metrics))
        else:  # Every selected client dropped out: the model is unchanged this round.
            row.update(train_loss=float('nan'), train_accuracy=float('nan'), train_examples=0)
        row['round_seconds'] = time.monotonic() - t0
        if evaluation_fn is not None and (round_num % eval_every == 0 or round_num == rounds):
            t1 = time.monotonic()
            row.update(evaluation_fn(process.get_model_weights(state)))
            row['eval_seconds'] = time.monotonic() - t1
        row['elapsed_seconds'] = time.monotonic() - start
        history.append(row)
        if on_round is not None:
            on_round(row)
    return state, history
