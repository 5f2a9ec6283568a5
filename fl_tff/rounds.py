"""One round, whatever the algorithm: what a process declares it needs for a round, what the
simulation hands it, what it returns.

Every process the simulation runs is a `RoundProcess`: `run_round(state, client_data, inputs)`
takes the server state, the participants' data (or client tasks) and `RoundInputs` (the round's
number and plan, the participants' ids, their states in each client-state slot the process
declares, and, for an asynchronous process, the model each one started from), and returns a
`RoundOutput` (the new state, TFF's metrics or None when the round trained nothing, the
participants' new states per slot, and the round's own metric columns). What a process needs is
declared once, in `RoundNeeds`; the loop (`fl_tff.simulation.loop`) supplies it and keeps the
slots' states, without telling processes apart.

A TFF `LearningProcess` (FedAvg and the other algorithms without client state) stays one, so it
runs under `tff.simulation.run_training_process` too; `as_rounds` gives the simulation its
`RoundProcess` view (`LearningRounds`).

Also here, because stages on different floors share them: a synchronous round's plan
(`RoundPlan`: who was selected, who contributes, who dropped where), the protocols of the
selections that plan rounds (`PlannedSelection`, `BufferedSelection`), and how many rounds a DP
tree of `--dp=tree` spans before it restarts (`restart_period`), which the FTRL-M server
optimizer restarts with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow_federated as tff

# A client's state in one slot, as the simulation stores it: its tensors, flattened.
FlatState = list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """Who was selected in a round and who contributes, with how many local epochs."""

    round_num: int
    selected: tuple[str, ...]
    participants: tuple[tuple[str, int], ...]  # (client id, local epochs)
    dropped: int = 0       # dropouts that returned nothing (before training or upload)
    stragglers: int = 0    # selected clients that could not finish E epochs
    partial: int = 0       # stragglers whose partial work is aggregated
    late: int = 0          # finished after the first K (over-selection) or the deadline
    offline: int = 0       # offline at the start, or went offline before finishing (clock)
    sim_seconds: float = float('nan')  # simulated duration of the round (with a device clock)
    sim_time: float = float('nan')     # simulated time at the round's end (with a device clock)
    malicious: Optional[int] = None    # aggregated clients that attack (with an attack)
    # (client id, one of DROP_POINTS) of each dropout; an 'after_upload' one is a participant.
    drop_points: tuple[tuple[str, str], ...] = ()

    def drop_point(self, client: str) -> Optional[str]:
        """Where `client` dropped out of the round (None: it did not)."""
        return dict(self.drop_points).get(client)

    def as_cohort(self) -> 'RoundPlan':
        """The round as one aggregation among its cohort sees it (e.g. a SecAgg instance):
        the selected clients, the contributors and where dropouts left; a round is its own."""
        return self

    def counts(self) -> dict[str, Any]:
        """Per-round counts for the metrics file."""
        out = {'selected': len(self.selected), 'aggregated': len(self.participants),
               'dropped': self.dropped, 'stragglers': self.stragglers, 'partial': self.partial,
               'late': self.late}
        if self.drop_points:
            out['dropped_after_upload'] = sum(p == 'after_upload' for _, p in self.drop_points)
        if not math.isnan(self.sim_seconds):
            out.update(offline=self.offline, sim_round_seconds=self.sim_seconds,
                       sim_time=self.sim_time)
        if self.malicious is not None:
            out['malicious'] = self.malicious
        return out


@runtime_checkable
class PlannedSelection(Protocol):
    """A client selection that plans each round before building its datasets (e.g.
    `ClientSelector`): the loop reports the plan's participation, passes it to `before_round`
    hooks (the ledgers) and to processes that need it."""

    def plan(self, round_num: int) -> Any:
        """The round's plan: who is selected and who contributes (`RoundPlan`)."""

    def client_inputs(self, plan: Any) -> list:
        """What the process's `next` takes for the participants (datasets, or client tasks for
        a process composed with a dataset computation), in `plan.participants` order."""


@runtime_checkable
class BufferedSelection(PlannedSelection, Protocol):
    """A planned selection whose plans are asynchronous buffers: each arrival carries the
    version of the model its client started from (e.g. `AsyncSelector`)."""

    buffers: bool  # Declares the kind; always True.


@dataclasses.dataclass(frozen=True)
class RoundNeeds:
    """What a process needs for a round besides the server state and the client data.

    Attributes:
      client_states: Slot name -> a client's state in it before it first trains (flattened):
        per-client state the simulation keeps, stores and checkpoints for the process.
      plan: Whether the round needs the whole plan (who was selected, who contributed, who
        dropped where), e.g. a secure-aggregation protocol among the cohort.
      start_weights: Whether each participant trains from the model current when it started
        (asynchronous training), which the simulation keeps while clients are in flight.
    """

    client_states: Mapping[str, FlatState] = dataclasses.field(default_factory=dict)
    plan: bool = False
    start_weights: bool = False


@dataclasses.dataclass(frozen=True)
class RoundInputs:
    """What the simulation hands a round (see `RoundNeeds`).

    Attributes:
      round_num: The round (or, asynchronously, server update) number.
      plan: The round's plan (`RoundPlan`, or an asynchronous one), None from a plain selection.
      client_ids: The participants, in the order of the client data.
      client_states: Slot -> the participants' states in it (same order).
      start_weights: Each participant's start model (asynchronous rounds; else empty).
    """

    round_num: int
    plan: Any = None
    client_ids: Sequence[str] = ()
    client_states: Mapping[str, Sequence[FlatState]] = dataclasses.field(default_factory=dict)
    start_weights: Sequence[tff.learning.models.ModelWeights] = ()


@dataclasses.dataclass(frozen=True)
class RoundOutput:
    """A round's result.

    Attributes:
      state: The new server state (unchanged when the round trained nothing).
      metrics: TFF's nested metrics, or None when the round trained nothing (e.g. a secure
        aggregation protocol aborted).
      client_states: Slot -> the participants' new states (same order as the inputs).
      columns: The round's own metric columns (e.g. a protocol's).
    """

    state: Any
    metrics: Any
    client_states: Mapping[str, Sequence[FlatState]] = dataclasses.field(default_factory=dict)
    columns: Mapping[str, float] = dataclasses.field(default_factory=dict)


@runtime_checkable
class InputValues(Protocol):
    """Per-participant values a round's stages take from what the simulation hands the round
    (e.g. an asynchronous buffer's start weights and staleness scales), so that any process
    running those stages (the plain one, or one with SecAgg) supplies them the same way."""

    names: tuple[str, ...]  # The client values it supplies.
    needs: RoundNeeds  # What it needs from the simulation.

    def values(self, inputs: RoundInputs) -> dict[str, list]:
        """Name -> one value per participant (in the order of the client data)."""


@runtime_checkable
class RoundProcess(Protocol):
    """A learning process as the simulation runs it (see the module docstring)."""

    @property
    def needs(self) -> RoundNeeds:
        """What its rounds need besides the server state and the client data."""

    def initialize(self) -> Any:
        """The initial server state."""

    def get_model_weights(self, state: Any) -> tff.learning.models.ModelWeights:
        """The global model of `state`."""

    def run_round(self, state: Any, client_data: list, inputs: RoundInputs) -> RoundOutput:
        """One round for the participants' `client_data`."""


class LearningRounds:
    """A TFF `LearningProcess` as a `RoundProcess`: its rounds need nothing more than the data.

    Args:
      process: The learning process (its `next(state, client_data)` runs each round).
    """

    needs = RoundNeeds()

    def __init__(self, process: tff.learning.templates.LearningProcess):
        self.process = process

    def initialize(self) -> Any:
        return self.process.initialize()

    def get_model_weights(self, state: Any) -> tff.learning.models.ModelWeights:
        return self.process.get_model_weights(state)

    def run_round(self, state: Any, client_data: list, inputs: RoundInputs) -> RoundOutput:
        del inputs  # A LearningProcess's round is its data.
        output = self.process.next(state, client_data)
        return RoundOutput(output.state, output.metrics)


def as_rounds(process: Any) -> RoundProcess:
    """`process` as the simulation runs it: itself when it is a `RoundProcess`, else (a TFF
    `LearningProcess`, or anything with `initialize`, `next(state, data)` and
    `get_model_weights`) through `LearningRounds`."""
    return process if isinstance(process, RoundProcess) else LearningRounds(process)


def check_output(inputs: RoundInputs, output: RoundOutput,
                 needs: RoundNeeds) -> Optional[str]:
    """Why `output` does not fit `inputs` and `needs` (one new state per participant in each
    declared slot), or None."""
    for slot in needs.client_states:
        states = output.client_states.get(slot)
        if output.metrics is not None and (states is None or
                                           len(states) != len(inputs.client_ids)):
            return (f'slot {slot!r}: {0 if states is None else len(states)} new states for '
                    f'{len(inputs.client_ids)} participants')
    return None


def restart_period(num_clients: int, clients_per_round: int, tree_restart: int) -> int:
    """Rounds per DP tree (`--dp=tree`, and FTRL-M's restarts): `tree_restart`, or one epoch of
    the population (N // K rounds)."""
    return tree_restart or max(1, num_clients // clients_per_round)
