"""A learning process that runs its own `next` computation over a composed process's state.

TFF's `LearningProcess` fixes `next(state, client_data)`. Processes whose round takes more
(client states, stale start weights, the SecAgg protocol's masks) compose their own `next` from
the same parts; `ComposedNextProcess` keeps the composed process's `initialize`, weights and
hyperparameters, so checkpoints and evaluators are unchanged, and implements
`fl_tff.simulation.worker_data.ComposableNext` (its `next` can be composed with a dataset
computation).
"""

from __future__ import annotations

import copy

import tensorflow_federated as tff


class ComposedNextProcess:
    """The state, weights and hyperparameters of `composed`, with `next_fn` behind `next`.

    Args:
      composed: A `LearningProcess` with the same server state.
      next_fn: The federated computation of a round (its signature is the subclass's).
    """

    def __init__(self, composed: tff.learning.templates.LearningProcess, next_fn: tff.Computation):
        self._composed, self._next_fn = composed, next_fn
        self.initialize = composed.initialize
        self.get_model_weights = composed.get_model_weights
        self.set_model_weights = composed.set_model_weights
        self.get_hparams = composed.get_hparams
        self.set_hparams = composed.set_hparams

    @property
    def next_computation(self) -> tff.Computation:
        """The federated computation behind `next`."""
        return self._next_fn

    def with_next(self, next_fn: tff.Computation):
        """The same process with `next_fn` behind `next` (e.g. composed with a dataset
        computation, so it takes client tasks instead of datasets)."""
        process = copy.copy(self)  # Keeps the subclass and its extras.
        process._next_fn = next_fn
        return process
