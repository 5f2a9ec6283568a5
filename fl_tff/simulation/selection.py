"""Per-round client selection, deterministic for a seed: who trains, with how many epochs and
which seeds, as client tasks that TFF's workers turn into data (`worker_data`)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import preprocessing
from fl_tff import attacks, options
from fl_tff.simulation import devices, worker_data
from fl_tff.rounds import BufferedSelection, PlannedSelection, RoundPlan
from fl_tff.simulation.heterogeneity import DeviceHeterogeneity, plan_round, selection_size



def _check_poisson(config, selection) -> None:
    del selection
    if config.over_selection > 0:
        raise options.OptionError('over_selection', 'needs a fixed cohort; --client_sampling=poisson '
                                  'has none (use --client_sampling=uniform or --over_selection=0)')


def _check_epochs(config, selection) -> None:
    del selection
    if config.over_selection > 0:
        raise options.OptionError('over_selection', '--client_sampling=epochs gives each round '
                                  'exactly its K clients of the epoch; use --over_selection=0')


SAMPLINGS = options.Registry('client_sampling', 'How each round\'s clients are drawn; the privacy '
                             'ledger accounts for the one used.', [
    options.Option('uniform', 'exactly K clients, without replacement',
                   provides={options.FIXED_COHORT, options.SAMPLED_CLIENTS}),
    options.Option('poisson', 'each client independently with rate K/N', check=_check_poisson,
                   provides={options.SAMPLED_CLIENTS}),
    options.Option('epochs', 'epochs of the population: each epoch (N // K rounds) takes a '
                   'seeded order of the clients K at a time, so a client trains at most once per '
                   'epoch (what --dp=tree needs; no sampling)', check=_check_epochs,
                   provides={options.FIXED_COHORT, options.ONCE_PER_EPOCH}),
], default='uniform')


class ClientSelector:
    """`round_num -> [client tasks]`: uniform sampling without replacement of
    `clients_per_round` clients (TFF's sampler), or Poisson sampling (each client joins
    independently with probability clients_per_round / population); device heterogeneity
    applied (see `heterogeneity`).

    A client's task (`worker_data.TASK_SPEC`) is all a worker needs to build the client's round
    of data (`fl_tff.data.client_rounds`) from `client_data`: its id, its local epochs this
    round (partial for stragglers), the seed of its shuffle and the seed of its DP-SGD noise,
    both derived from (seed, round, client), and whether it is malicious (with an `attack`, a
    seeded `attack.fraction` of the population is, `fl_tff.attacks.choose_malicious`).
    `dataset_computation()` is the TFF computation that
    builds the round from a task in the worker; `client_round` builds the same round here.
    With `steps_per_epoch`, local steps stop at epoch boundaries (DP-SGD).

    Callable with the signature `tff.simulation.run_training_process` expects, for a process
    composed with `dataset_computation()` (`worker_data.compose`); our loop also calls `plan` and
    `client_inputs` separately to report the round's participation counts.
    """

    def __init__(self, client_data: tff.simulation.datasets.ClientData, *, clients_per_round: int,
                 epochs: int, batch_size: int, seed: int,
                 heterogeneity: Optional[DeviceHeterogeneity] = None,
                 client_sizes: Optional[Mapping[str, int]] = None, sampling: str = 'uniform',
                 steps_per_epoch: bool = False, clock: Optional[devices.TaskClock] = None,
                 round_deadline: float = 0.0, attack: Optional[attacks.Attack] = None):
        if round_deadline > 0 and clock is None:
            raise ValueError('a round deadline needs a device clock (clock=)')
        if sampling not in SAMPLINGS:
            raise ValueError(f'unknown sampling {sampling!r}; valid choices: {", ".join(SAMPLINGS)}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self._client_data = client_data
        client_ids = list(client_data.client_ids)
        self._heterogeneity = heterogeneity or DeviceHeterogeneity()
        self._heterogeneity.validate(epochs)
        self._num_sampled = selection_size(clients_per_round, self._heterogeneity.over_selection)
        if not 1 <= clients_per_round <= len(client_ids) or self._num_sampled > len(client_ids):
            raise ValueError(f'cannot sample {self._num_sampled} clients per round from '
                             f'{len(client_ids)} (clients_per_round={clients_per_round})')
        if sampling != 'uniform' and self._heterogeneity.over_selection > 0:
            raise ValueError(f'over-selection needs uniform sampling, not {sampling!r}')
        if self._heterogeneity.over_selection > 0 and client_sizes is None:
            raise ValueError('over-selection needs client_sizes to simulate finishing times')
        self._clients_per_round, self._epochs = clients_per_round, epochs
        self._batch_size, self._seed = batch_size, seed
        self._client_sizes = client_sizes or {}
        self._position = {cid: i for i, cid in enumerate(client_ids)}
        self._client_ids = client_ids
        self.sampling = sampling
        self._steps_per_epoch = steps_per_epoch
        self.clock, self._deadline = clock, round_deadline
        self._round_ends: list[float] = [0.0]  # Simulated end time of rounds 0, 1, ... (cache).
        self._sample = tff.simulation.build_uniform_sampling_fn(client_ids, replace=False,
                                                                random_seed=seed)
        self.attack = attack
        self.malicious: frozenset[str] = (frozenset() if attack is None else
                                          attacks.choose_malicious(client_ids, attack.fraction,
                                                                   seed))

    def dataset_computation(self, client_data: Optional[tff.simulation.datasets.ClientData] = None
                            ) -> tff.Computation:
        """The TFF computation task -> the client's round, run where the client trains.

        Args:
          client_data: Where the worker reads the clients' examples (default: the selector's
            own `ClientData`); the same clients and examples, e.g. its files
            (`fl_tff.data.client_files`).
        """
        return worker_data.build_dataset_computation(
            self._client_data if client_data is None else client_data,
            batch_size=self._batch_size, steps_per_epoch=self._steps_per_epoch,
            attack=self.attack)

    def client_round(self, task: Mapping) -> tf.data.Dataset:
        """The client's round for `task`, built here: the same ops, the same batches, as
        `dataset_computation` builds in the worker."""
        return worker_data.client_round(self._client_data, task, batch_size=self._batch_size,
                                        steps_per_epoch=self._steps_per_epoch,
                                        attack=self.attack)

    @property
    def population(self) -> int:
        """Number of clients sampled from."""
        return len(self._client_ids)

    @property
    def cohort(self) -> int:
        """Clients sampled per round (expected, for Poisson)."""
        return self._num_sampled

    @property
    def client_ids(self) -> list[str]:
        """The population, in its order."""
        return list(self._client_ids)

    @property
    def epochs(self) -> int:
        """Local epochs of a client that finishes its work."""
        return self._epochs

    def sample(self, draw: int, size: int) -> list[str]:
        """`size` clients drawn uniformly without replacement; the `draw`-th draw of the run
        (round `draw`'s cohort under uniform sampling)."""
        return self._sample(draw, size)

    def plan(self, round_num: int) -> RoundPlan:
        """Who is selected in `round_num` and who contributes with how many epochs; with a
        device clock, when the round starts and ends in simulated time (rounds run back to
        back, so planning a round plans the ones before it)."""
        if self.clock is not None:
            while len(self._round_ends) < round_num:
                self._round_ends.append(self._plan(len(self._round_ends),
                                                   self._round_ends[-1]).sim_time)
            plan = self._plan(round_num, self._round_ends[round_num - 1])
        else:
            plan = self._plan(round_num, 0.0)
        if self.attack is None:
            return plan
        return dataclasses.replace(plan, malicious=sum(
            cid in self.malicious for cid, _ in plan.participants))

    def _plan(self, round_num: int, start_time: float) -> RoundPlan:
        if self.sampling == 'poisson':
            rate = self._clients_per_round / len(self._client_ids)
            joins = np.random.default_rng([self._seed, round_num, 0x9015]).random(len(self._client_ids))
            selected = [cid for cid, u in zip(self._client_ids, joins) if u < rate]
            cohort = len(selected)
        elif self.sampling == 'epochs':
            selected, cohort = self.epoch_block(round_num), self._clients_per_round
        else:
            selected, cohort = self._sample(round_num, self._num_sampled), self._clients_per_round
        return plan_round(round_num, selected,
                          clients_per_round=cohort, epochs=self._epochs,
                          heterogeneity=self._heterogeneity, seed=self._seed,
                          client_sizes=self._client_sizes, clock=self.clock,
                          start_time=start_time, deadline=self._deadline)

    @property
    def rounds_per_epoch(self) -> int:
        """N // K: rounds in an epoch of the population (`sampling='epochs'`)."""
        return max(1, len(self._client_ids) // self._clients_per_round)

    def epoch_block(self, round_num: int) -> list[str]:
        """Round `round_num`'s clients under `sampling='epochs'`: block b of epoch e's seeded
        order of the population ((e, b) = divmod(round_num - 1, N // K)); the N mod K clients
        left over sit the epoch out."""
        epoch, block = divmod(round_num - 1, self.rounds_per_epoch)
        order = np.random.default_rng([self._seed, epoch, 0xE90C]).permutation(
            len(self._client_ids))
        k = self._clients_per_round
        return [self._client_ids[i] for i in order[block * k:(block + 1) * k]]

    def client_inputs(self, plan: RoundPlan) -> list[collections.OrderedDict]:
        """The tasks of the plan's participants, in `plan.participants` order: what the loop
        passes to a process composed with `dataset_computation`."""
        return [self.task(cid, epochs, plan.round_num) for cid, epochs in plan.participants]

    def task(self, client_id: str, epochs: int, round_num: int) -> collections.OrderedDict:
        """`client_id`'s task in `round_num` with `epochs` local epochs."""
        position = self._position[client_id]
        return worker_data.make_task(
            client_id, epochs,
            shuffle_seed=preprocessing.derive_seed(self._seed, round_num, position),
            noise_seed=preprocessing.derive_seed(self._seed, round_num, position, 0xD9),
            malicious=client_id in self.malicious)

    def __call__(self, round_num: int) -> list:
        return self.client_inputs(self.plan(round_num))


def build_training_selection_fn(client_data: tff.simulation.datasets.ClientData, *,
                                clients_per_round: int, epochs: int, batch_size: int, seed: int,
                                heterogeneity: Optional[DeviceHeterogeneity] = None,
                                client_sizes: Optional[Mapping[str, int]] = None,
                                sampling: str = 'uniform',
                                steps_per_epoch: bool = False,
                                clock: Optional[devices.TaskClock] = None,
                                round_deadline: float = 0.0,
                                attack: Optional[attacks.Attack] = None) -> ClientSelector:
    """A `ClientSelector` (see there); kept as the function name used across the library."""
    return ClientSelector(client_data, clients_per_round=clients_per_round, epochs=epochs,
                          batch_size=batch_size, seed=seed, heterogeneity=heterogeneity,
                          client_sizes=client_sizes, sampling=sampling,
                          steps_per_epoch=steps_per_epoch, clock=clock,
                          round_deadline=round_deadline, attack=attack)


@dataclasses.dataclass(frozen=True)
class Selection:
    """How the loop draws each round's clients: a `PlannedSelection` (a plan, then the
    participants' inputs), or a plain `round_num -> client data` function (TFF's style: no
    plan, so no ledgers, client state or protocol).

    Attributes:
      planned: The planned selection, or None.
      plain: The plain function, or None.
      buffers: Whether its plans are asynchronous buffers with the start versions of their
        clients (a `BufferedSelection`).
    """

    planned: Optional[PlannedSelection]
    plain: Optional[Callable[[int], list]]
    buffers: bool = False

    def plan(self, round_num: int) -> Any:
        """The round's plan, or None for a plain function."""
        return None if self.planned is None else self.planned.plan(round_num)

    def clients(self, round_num: int, plan: Any) -> list:
        """The round's client inputs, for its `plan` (None for a plain function)."""
        return self.plain(round_num) if self.planned is None else self.planned.client_inputs(plan)


def as_selection(selection_fn: Any) -> Selection:
    """`selection_fn` (a `PlannedSelection`, or a plain `round_num -> client data` function) as
    the loop draws clients with it."""
    if isinstance(selection_fn, PlannedSelection):
        return Selection(selection_fn, None,
                         buffers=isinstance(selection_fn, BufferedSelection))
    return Selection(None, selection_fn)
