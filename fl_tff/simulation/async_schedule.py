"""Asynchronous client scheduling on the simulated clock (FedBuff, FedAsync).

`AsyncSelector` keeps `concurrency` clients training at once. Each starts from the global model
current when it starts (its start version) and arrives when the device clock says its task is
done (`fl_tff.simulation.devices`). Arrivals fill the server's buffer; when it holds
`buffer_size` updates the server applies them: one server update, the "round" of an
asynchronous run. A client whose device goes offline during its task, or that drops out
(`dropout_rate`), is lost and its slot is refilled when the server notices (at the time it went
offline, or at its finish time).

The rules that make the event order deterministic for a seed:
* events at the same simulated time are handled in the order their clients started;
* all arrivals at a time are handled (filling, and possibly flushing, buffers) before the freed
  slots are refilled, so replacements start from the newest model;
* candidates come in draws of `concurrency` clients, uniformly without replacement, the i-th
  draw being synchronous round i's cohort under `--client_sampling=uniform`
  (`ClientSelector.sample`); a candidate already training, or offline, is skipped (a client
  whose update waits in the buffer is free again); free slots are refilled at events (an
  arrival, a loss, or a free client coming online);
* a client's task (epochs, shuffle and noise seeds) is the task it would have in the round of
  its draw.

Staleness of an update applied as server update n (producing model version n) by a client that
started from version v is (n - 1) - v: the number of server updates it missed. The schedule
does not depend on training results, so `plan(n)` replays it: a resumed run rebuilds the
schedule, and only the start weights of clients in flight need checkpointing (`VersionStore`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from fl_tff.simulation import devices
from fl_tff.rounds import RoundPlan
from fl_tff.simulation.selection import ClientSelector


@dataclasses.dataclass(frozen=True)
class Flight:
    """One client task in flight."""

    client_id: str
    draw: int            # the draw the client came from (its task's round)
    start_version: int   # the model version it trains from
    start_time: float
    end_time: float      # when it arrives, or when it is lost
    lost: bool           # went offline, or dropped out
    order: int           # start order (ties at the same time)


@dataclasses.dataclass(frozen=True)
class AsyncPlan:
    """One server update: the buffered clients it applies and what the clock saw since the
    previous update. Used by the loop like a synchronous `RoundPlan`.

    Attributes:
      round_num: The server update's number (1-based); it produces model version `round_num`.
      selected: Clients that started a task since the previous update (each downloaded the
        model).
      participants: (client id, local epochs) of the buffered updates it applies.
      draws: Each participant's draw (its task's round).
      start_versions: The model version each participant trained from.
      live_versions: Versions that clients still in flight (or buffered) trained from, plus
        this update's: the start weights a checkpoint of this update must keep.
      sim_time: Simulated time of the update.
      sim_seconds: Simulated time since the previous update.
      lost: Clients lost (offline or dropped out) since the previous update.
      in_flight: Clients training when the update is applied.
      idle_slot_seconds: Slot-seconds with fewer than `concurrency` clients training since the
        previous update.
    """

    round_num: int
    selected: tuple[str, ...]
    participants: tuple[tuple[str, int], ...]
    draws: tuple[int, ...]
    start_versions: tuple[int, ...]
    live_versions: tuple[int, ...]
    sim_time: float
    sim_seconds: float
    lost: int
    in_flight: int
    idle_slot_seconds: float

    @property
    def staleness(self) -> list[int]:
        """Per participant: server updates applied since it started."""
        return [self.round_num - 1 - v for v in self.start_versions]

    def as_cohort(self) -> RoundPlan:
        """The buffer as one aggregation among its cohort sees it (e.g. a SecAgg instance):
        its updates are the parties, all of which arrived (a client lost mid-task never reaches
        the buffer); a client with two updates in the buffer is two parties ('c', 'c#2')."""
        seen: collections.Counter = collections.Counter()
        parties = []
        for client, epochs in self.participants:
            seen[client] += 1
            parties.append((client if seen[client] == 1 else f'{client}#{seen[client]}', epochs))
        return RoundPlan(self.round_num, tuple(p for p, _ in parties), tuple(parties))

    def counts(self) -> dict[str, Any]:
        """Per-update columns for the metrics file."""
        s = np.asarray(self.staleness, float)
        return {'selected': len(self.selected), 'aggregated': len(self.participants),
                'lost': self.lost, 'in_flight': self.in_flight,
                'sim_round_seconds': self.sim_seconds, 'sim_time': self.sim_time,
                'idle_slot_seconds': self.idle_slot_seconds,
                'staleness_mean': float(s.mean()), 'staleness_p50': float(np.percentile(s, 50)),
                'staleness_p90': float(np.percentile(s, 90)), 'staleness_max': int(s.max())}


class NoClientAvailableError(RuntimeError):
    """No client can ever start, or finish, a task again; the run cannot go on."""


class AsyncSelector:
    """Plans server updates of asynchronous training (see the module docstring); implements the
    loop's `BufferedSelection`.

    Args:
      base: The synchronous selector whose draws, tasks and dataset computation it uses.
      clock: Task durations and availability.
      concurrency: Clients training at once (C).
      buffer_size: Updates per server update (K).
      dropout_rate: Probability that a started client never reports, drawn per (seed, draw,
        client).
      seed: Seeds the dropouts.
    """

    def __init__(self, base: ClientSelector, clock: devices.TaskClock, *, concurrency: int,
                 buffer_size: int, dropout_rate: float = 0.0, seed: int = 0):
        if not 1 <= concurrency <= base.population:
            raise ValueError(f'concurrency must be in [1, {base.population}] (the population), '
                             f'got {concurrency}')
        if not 1 <= buffer_size <= concurrency:
            raise ValueError(f'buffer_size must be in [1, concurrency = {concurrency}], got '
                             f'{buffer_size}')
        self.base, self.clock = base, clock
        self.concurrency, self.buffer_size = concurrency, buffer_size
        self._dropout_rate, self._seed = dropout_rate, seed
        self._plans: list[AsyncPlan] = []
        self._events: Iterator[AsyncPlan] = self._simulate()

    @property
    def malicious(self) -> frozenset[str]:
        """The malicious clients (the base selector's; see `fl_tff.attacks`)."""
        return self.base.malicious

    buffers = True  # BufferedSelection: its plans are buffers of arrivals.

    # PlannedSelection.
    def plan(self, round_num: int) -> AsyncPlan:
        """Server update `round_num` (1-based), simulating the clock as far as needed."""
        while len(self._plans) < round_num:
            self._plans.append(next(self._events))
        return self._plans[round_num - 1]

    def client_inputs(self, plan: AsyncPlan) -> list:
        """The participants' tasks, in `plan.participants` order."""
        return [self.base.task(cid, epochs, draw)
                for (cid, epochs), draw in zip(plan.participants, plan.draws)]

    def dataset_computation(self, client_data=None):
        return self.base.dataset_computation(client_data)

    def client_round(self, task):
        return self.base.client_round(task)

    @property
    def population(self) -> int:
        return self.base.population

    @property
    def cohort(self) -> int:
        return self.buffer_size

    def participation(self, round_num: int) -> dict[str, int]:
        """Updates applied per client (every client of the population) after `round_num`."""
        counts = collections.Counter(cid for n in range(1, round_num + 1)
                                     for cid, _ in self.plan(n).participants)
        return {cid: counts.get(cid, 0) for cid in self.base.client_ids}

    def _candidates(self) -> Iterator[tuple[int, str]]:
        draw = 0
        while True:
            draw += 1
            for cid in self.base.sample(draw, self.concurrency):
                yield draw, cid

    def _dropped(self, draw: int, client_id: str) -> bool:
        if self._dropout_rate <= 0:
            return False
        key = int.from_bytes(client_id.encode()[-8:].rjust(8, b'\0'), 'big')
        return bool(np.random.default_rng([self._seed, draw, key, 0xD0]).random()
                    < self._dropout_rate)

    def _simulate(self) -> Iterator[AsyncPlan]:
        """The event loop: yields server updates in order, forever."""
        clock, epochs = self.clock, self.base.epochs
        candidates = self._candidates()
        t, version, order = 0.0, 0, 0
        flying: list[Flight] = []
        buffer: list[Flight] = []
        started: list[str] = []
        lost, idle, last_update_time = 0, 0.0, 0.0

        def refill(now: float) -> None:
            nonlocal order
            busy = {f.client_id for f in flying}
            free = {c for c in self.base.client_ids if c not in busy and clock.online(c, now)}
            while len(flying) < self.concurrency and free:  # Else: wait for the next event.
                draw, cid = next(candidates)
                if cid not in free:
                    continue
                free.discard(cid)
                finish = now + clock.task_seconds(cid, epochs)
                offline_at = clock.online_until(cid, now)
                gone = finish > offline_at or self._dropped(draw, cid)
                end = min(finish, offline_at) if gone else finish
                flying.append(Flight(cid, draw, version, now, end, gone, order))
                order += 1
                started.append(cid)

        refill(t)
        losses_in_a_row = 0
        while True:
            next_t = min((f.end_time for f in flying), default=math.inf)
            if len(flying) < self.concurrency:  # A free client coming online is an event too.
                busy = {f.client_id for f in flying}
                next_t = min(next_t, clock.next_online(
                    [c for c in self.base.client_ids if c not in busy], math.nextafter(t, math.inf)))
            if math.isinf(next_t):
                raise NoClientAvailableError(
                    f'no client can start a task after simulated time {t:.0f}s: every device '
                    'is offline for good')
            idle += (self.concurrency - len(flying)) * (next_t - t)
            t = next_t
            arriving = sorted((f for f in flying if f.end_time <= t), key=lambda f: f.order)
            for f in arriving:
                flying.remove(f)
                if f.lost:
                    lost += 1
                    losses_in_a_row += 1
                    if losses_in_a_row > 100 * self.population:
                        raise NoClientAvailableError(
                            f'{losses_in_a_row} tasks in a row were lost (offline or dropped out) '
                            f'by simulated time {t:.0f}s: no client can finish a task')
                    continue
                losses_in_a_row = 0
                buffer.append(f)
                if len(buffer) == self.buffer_size:
                    version += 1
                    live = sorted({g.start_version for g in flying} | {version})
                    yield AsyncPlan(
                        round_num=version, selected=tuple(started),
                        participants=tuple((g.client_id, epochs) for g in buffer),
                        draws=tuple(g.draw for g in buffer),
                        start_versions=tuple(g.start_version for g in buffer),
                        live_versions=tuple(live), sim_time=t, sim_seconds=t - last_update_time,
                        lost=lost, in_flight=len(flying), idle_slot_seconds=idle)
                    buffer.clear()
                    started, lost, idle, last_update_time = [], 0, 0.0, t
            refill(t)


class VersionStore:
    """The start weights of clients in flight, by model version (implements
    `checkpoints.ClientStateStore`, so a checkpoint keeps them beside the server state).

    Args:
      initial: Version 0's weights (the initial model).
    """

    def __init__(self, initial: tff.learning.models.ModelWeights):
        self._weights: dict[int, tff.learning.models.ModelWeights] = {0: _numpy(initial)}

    def __len__(self) -> int:
        return len(self._weights)

    @property
    def versions(self) -> list[int]:
        return sorted(self._weights)

    def get(self, version: int) -> tff.learning.models.ModelWeights:
        """Version `version`'s weights (KeyError if it was not kept)."""
        return self._weights[version]

    def put(self, version: int, weights: tff.learning.models.ModelWeights,
            keep: Sequence[int]) -> None:
        """Stores `version` and drops every version not in `keep`."""
        self._weights[version] = _numpy(weights)
        for v in list(self._weights):
            if v not in keep:
                del self._weights[v]

    def save_client_states(self, path: str) -> None:
        arrays = {}
        for v, w in self._weights.items():
            arrays.update({f'{v}::t::{i}': t for i, t in enumerate(w.trainable)})
            arrays.update({f'{v}::n::{i}': t for i, t in enumerate(w.non_trainable)})
        np.savez(path, **arrays)

    def load_client_states(self, path: Optional[str]) -> None:
        if path is None:
            raise ValueError('a checkpoint of an asynchronous run must keep its start weights')
        parts: dict[int, dict[str, dict[int, np.ndarray]]] = {}
        with np.load(path) as saved:
            for key in saved.files:
                v, kind, i = key.split('::')
                parts.setdefault(int(v), {'t': {}, 'n': {}})[kind][int(i)] = saved[key]
        self._weights = {v: tff.learning.models.ModelWeights(
            [p['t'][i] for i in sorted(p['t'])], [p['n'][i] for i in sorted(p['n'])])
            for v, p in parts.items()}


def _numpy(weights: tff.learning.models.ModelWeights) -> tff.learning.models.ModelWeights:
    return tff.learning.models.ModelWeights([np.asarray(t) for t in weights.trainable],
                                            [np.asarray(t) for t in weights.non_trainable])
