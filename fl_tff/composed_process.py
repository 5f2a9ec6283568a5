"""A learning process that runs its own `next` computation over a composed process's state.

TFF's `LearningProcess` fixes `next(state, client_data)`. Processes whose round takes more
(client states, stale start weights, the SecAgg protocol's masks) get their `next` from the one
round composer (`fl_tff.round_composer`) over the same parts; `ComposedNextProcess` keeps the composed process's `initialize`, weights and
hyperparameters, so checkpoints and evaluators are unchanged, and implements
`fl_tff.simulation.worker_data.ComposableNext` (its `next` can be composed with a dataset
computation) and `fl_tff.runtime.worker_values.ReadsValuesFromFiles`: the per-client values its `next`
takes after the client data (states, start weights, masks) can reach the workers as files.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from fl_tff.runtime import worker_values


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
        # The types of the per-client values `next` takes (third parameter) and returns.
        parameters = next_fn.type_signature.parameter
        self._values_type = (parameters[2].member if parameters is not None
                             and len(parameters) > 2 else None)
        self._returned_type = (None if self.RETURNED_VALUES_AT is None else
                               next_fn.type_signature.result[self.RETURNED_VALUES_AT].member)

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
        return process

    def _next_with_values(self, state: Any, client_data: list,
                          values: Sequence[Sequence[Any]], *rest: Any) -> Any:
        """`next_fn(state, client_data, values, *rest)` for `values`, each client's value of
        `next`'s third parameter flattened (in the order of `tff.structure.flatten` of its
        type): packed into that type, or, after `reading_values_from`, as the paths of files
        holding them. The result's new per-client values (`RETURNED_VALUES_AT`), if any, come
        back flattened the same way, as lists of numpy arrays, either way."""
        at = self.RETURNED_VALUES_AT
        if self._values_dir is None:
            packed = [tff.structure.pack_sequence_as(self._values_type, list(v)) for v in values]
            result = self._next_fn(state, client_data, packed, *rest)
            if at is None:
                return result
            returned = [flatten_as(self._returned_type, v) for v in result[at]]
        else:
            with worker_values.round_files(self._values_dir, values) as paths:
                result = self._next_fn(state, client_data, paths, *rest)
                if at is None:
                    return result
                returned = [worker_values.read_written(p, self._returned_type)
                            for p in result[at]]
        return tuple(returned if i == at else r for i, r in enumerate(result))


def flatten_as(value_type: tff.Type, value: Any) -> list[np.ndarray]:
    """`value` (as TFF returns a value of `value_type`: a tensor, or a struct as a `Struct`,
    mapping, named tuple or sequence) flattened in the order of `tff.structure.flatten` of
    its type."""
    if isinstance(value_type, tff.TensorType):
        return [np.asarray(value)]
    flat = []
    for i, (name, element_type) in enumerate(tff.structure.iter_elements(value_type)):
        element = value[name] if isinstance(value, Mapping) else value[i]
        flat.extend(flatten_as(element_type, element))
    return flat
