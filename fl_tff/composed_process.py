"""A learning process that runs its own `next` computation over a composed process's state.

TFF's `LearningProcess` fixes `next(state, client_data)`. Processes whose round takes more
(client states, stale start weights, the SecAgg protocol's masks) get their `next` from the one
round composer (`fl_tff.round_composer`) over the same parts; `ComposedNextProcess` keeps the composed process's `initialize`, weights and
hyperparameters, so checkpoints and evaluators are unchanged, and implements
`fl_tff.simulation.worker_data.ComposableNext` (its `next` can be composed with a dataset
computation) and `fl_tff.worker_values.ReadsValuesFromFiles`: the per-client values its `next`
takes after the client data (states, start weights, masks) can reach the workers as files.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from fl_tff import worker_values


class ComposedNextProcess:
    """The state, weights and hyperparameters of `composed`, with `next_fn` behind `next`.

    Args:
      composed: A `LearningProcess` with the same server state.
      next_fn: The federated computation of a round (its signature is the subclass's).
    """

    # The position in `next_fn`'s result of a new value per client (CLIENTS-placed) that
    # travels back as files too, or None (a subclass whose round returns one sets it).
    RETURNED_VALUES_AT: Optional[int] = None

    def __init__(self, composed: tff.learning.templates.LearningProcess, next_fn: tff.Computation):
        self._composed, self._next_fn = composed, next_fn
        self.initialize = composed.initialize
        self.get_model_weights = composed.get_model_weights
        self.set_model_weights = composed.set_model_weights
        self.get_hparams = composed.get_hparams
        self.set_hparams = composed.set_hparams
        self._values_dir: Optional[str] = None  # Set by `reading_values_from`.

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

    def reading_values_from(self, directory: str):
        """The same process whose workers read the per-client values of `next` (its third
        parameter, after the client data) from files written in `directory` for each round,
        and write there the new per-client values its round returns (`RETURNED_VALUES_AT`).

        Raises:
          TypeError: A value dtype that raw bytes cannot carry.
        """
        process = self.with_next(worker_values.read_from_paths(
            self._next_fn, 2, self.RETURNED_VALUES_AT))
        process._values_dir = directory
        if self.RETURNED_VALUES_AT is not None:
            process._returned_type = (
                self._next_fn.type_signature.result[self.RETURNED_VALUES_AT].member)
        return process

    def _next_with_values(self, state: Any, client_data: list, values: Sequence[Any], *rest: Any,
                          flatten: Callable[[Any], Sequence[Any]]) -> Any:
        """`next_fn(state, client_data, values, *rest)`, the values as they are or, after
        `reading_values_from`, as the paths of files holding each one's `flatten`ed tensors.
        The result's new per-client values (`RETURNED_VALUES_AT`), if any, come back
        `flatten`ed, as lists of numpy arrays, either way."""
        at = self.RETURNED_VALUES_AT
        if self._values_dir is None:
            result = self._next_fn(state, client_data, list(values), *rest)
            if at is None:
                return result
            returned = [[np.asarray(t) for t in flatten(v)] for v in result[at]]
        else:
            with worker_values.round_files(self._values_dir,
                                           [flatten(v) for v in values]) as paths:
                result = self._next_fn(state, client_data, paths, *rest)
                if at is None:
                    return result
                returned = [worker_values.read_written(p, self._returned_type)
                            for p in result[at]]
        return tuple(returned if i == at else r for i, r in enumerate(result))
