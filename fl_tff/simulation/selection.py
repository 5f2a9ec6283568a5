"""Per-round client selection and client dataset construction, deterministic for a seed."""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Mapping, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import preprocessing
from fl_tff import options, weighting
from fl_tff.simulation.heterogeneity import (DeviceHeterogeneity, RoundPlan, plan_round,
                                             selection_size)




def _check_poisson(config, selection) -> None:
    del selection
    if config.over_selection > 0:
        raise options.OptionError('over_selection', 'needs a fixed cohort; --client_sampling=poisson '
                                  'has none (use --client_sampling=uniform or --over_selection=0)')


SAMPLINGS = options.Registry('client_sampling', 'How each round\'s clients are drawn; the privacy '
                             'ledger accounts for the one used.', [
    options.Option('uniform', 'exactly K clients, without replacement',
                   provides={options.FIXED_COHORT}),
    options.Option('poisson', 'each client independently with rate K/N', check=_check_poisson),
], default='uniform')


@dataclasses.dataclass(frozen=True)
class WholeClientData:
    """A client's whole round of data as one element (all its batches in order, concatenated),
    with the batch size to split it into: what the fast path reads. TFF's runtime refuses it.

    Attributes:
      dataset: The one-element `tf.data.Dataset`, or a zero-argument function that builds it
        (so a round holds one client's examples per thread, not the whole cohort's).
      batch_size: The local batch size.
    """

    dataset: Union[tf.data.Dataset, Callable[[], tf.data.Dataset]]
    batch_size: int

    def build(self) -> tf.data.Dataset:
        return self.dataset() if callable(self.dataset) else self.dataset


class ClientSelector:
    """`round_num -> [client datasets]`: uniform sampling without replacement of
    `clients_per_round` clients (TFF's sampler), or Poisson sampling (each client joins
    independently with probability clients_per_round / population); device heterogeneity
    applied (see `heterogeneity`); each client's data shuffled with a seed derived from
    (seed, round, client). With `noise_seeds`, every batch also carries `noise_seed`
    = [seed of (seed, round, client), step] for DP-SGD's stateless noise. With
    `client_examples`, every batch carries the client's n_k from `client_sizes` (added before
    `noise_seed`; see `fl_tff.weighting`, `--client_weighting=examples`). With
    `whole_client_batches`, each client's data is a `WholeClientData` (one element holding all
    its batches in order, plus the batch size) for the fast path (`fast.FastProcess`).

    Callable with the signature `tff.simulation.run_training_process` expects (except with
    `whole_client_batches`, which only the fast path takes); our loop also calls `plan` and
    `datasets` separately to report the round's participation counts.
    """

    def __init__(self, client_data: tff.simulation.datasets.ClientData, *, clients_per_round: int,
                 epochs: int, batch_size: int, seed: int,
                 heterogeneity: Optional[DeviceHeterogeneity] = None,
                 client_sizes: Optional[Mapping[str, int]] = None, sampling: str = 'uniform',
                 noise_seeds: bool = False, whole_client_batches: bool = False,
                 client_examples: bool = False):
        if sampling not in SAMPLINGS:
            raise ValueError(f'unknown sampling {sampling!r}; valid choices: {", ".join(SAMPLINGS)}')
        self._client_data = client_data
        client_ids = list(client_data.client_ids)
        self._heterogeneity = heterogeneity or DeviceHeterogeneity()
        self._heterogeneity.validate(epochs)
        self._num_sampled = selection_size(clients_per_round, self._heterogeneity.over_selection)
        if not 1 <= clients_per_round <= len(client_ids) or self._num_sampled > len(client_ids):
            raise ValueError(f'cannot sample {self._num_sampled} clients per round from '
                             f'{len(client_ids)} (clients_per_round={clients_per_round})')
        if sampling == 'poisson' and self._heterogeneity.over_selection > 0:
            raise ValueError('over-selection needs a fixed cohort; Poisson sampling has none')
        if self._heterogeneity.over_selection > 0 and client_sizes is None:
            raise ValueError('over-selection needs client_sizes to simulate finishing times')
        if client_examples and (client_sizes is None or set(client_sizes) < set(client_ids)):
            raise ValueError('client_examples needs client_sizes for every client')
        self._client_examples = client_examples
        self._clients_per_round, self._epochs = clients_per_round, epochs
        self._batch_size, self._seed = batch_size, seed
        self._client_sizes = client_sizes or {}
        self._position = {cid: i for i, cid in enumerate(client_ids)}
        self._client_ids = client_ids
        self.sampling, self._noise_seeds = sampling, noise_seeds
        self._whole = whole_client_batches
        self._sample = tff.simulation.build_uniform_sampling_fn(client_ids, replace=False,
                                                                random_seed=seed)

    @property
    def population(self) -> int:
        """Number of clients sampled from."""
        return len(self._client_ids)

    @property
    def cohort(self) -> int:
        """Clients sampled per round (expected, for Poisson)."""
        return self._num_sampled

    def plan(self, round_num: int) -> RoundPlan:
        """Who is selected in `round_num` and who contributes with how many epochs."""
        if self.sampling == 'poisson':
            rate = self._clients_per_round / len(self._client_ids)
            joins = np.random.default_rng([self._seed, round_num, 0x9015]).random(len(self._client_ids))
            selected = [cid for cid, u in zip(self._client_ids, joins) if u < rate]
            cohort = len(selected)
        else:
            selected, cohort = self._sample(round_num, self._num_sampled), self._clients_per_round
        return plan_round(round_num, selected,
                          clients_per_round=cohort, epochs=self._epochs,
                          heterogeneity=self._heterogeneity, seed=self._seed,
                          client_sizes=self._client_sizes)

    def datasets(self, plan: RoundPlan) -> list:
        """The preprocessed datasets of the plan's participants. With `whole_client_batches`
        (the fast path), `WholeClientData` whose datasets are built when a thread takes them."""
        builders = [functools.partial(self._dataset, cid, epochs, plan.round_num)
                    for cid, epochs in plan.participants]
        if self._whole:
            return [WholeClientData(build, self._batch_size) for build in builders]
        return [build() for build in builders]

    def _dataset(self, cid: str, epochs: int, round_num: int) -> tf.data.Dataset:
        ds = preprocessing.preprocess_client_dataset(
            self._client_data.create_tf_dataset_for_client(cid), epochs=epochs,
            batch_size=self._batch_size, batch_per_epoch=self._noise_seeds, whole=self._whole,
            shuffle_seed=preprocessing.derive_seed(self._seed, round_num, self._position[cid]))
        if self._client_examples:
            ds = weighting.add_client_examples(ds, self._client_sizes[cid])
        if self._noise_seeds:
            ds = _add_noise_seeds(ds, preprocessing.derive_seed(
                self._seed, round_num, self._position[cid], 0xD9))
        return ds

    def __call__(self, round_num: int) -> list:
        return self.datasets(self.plan(round_num))


def _add_noise_seeds(dataset: tf.data.Dataset, client_seed: int) -> tf.data.Dataset:
    """Adds `noise_seed` = [client_seed, step] to every batch."""
    def add(step, batch):
        return collections.OrderedDict(
            [*batch.items(), ('noise_seed', tf.stack([tf.constant(client_seed, tf.int64), step]))])
    return dataset.enumerate().map(add)


def build_training_selection_fn(client_data: tff.simulation.datasets.ClientData, *,
                                clients_per_round: int, epochs: int, batch_size: int, seed: int,
                                heterogeneity: Optional[DeviceHeterogeneity] = None,
                                client_sizes: Optional[Mapping[str, int]] = None,
                                sampling: str = 'uniform', noise_seeds: bool = False,
                                whole_client_batches: bool = False,
                                client_examples: bool = False) -> ClientSelector:
    """A `ClientSelector` (see there); kept as the function name used across the library."""
    return ClientSelector(client_data, clients_per_round=clients_per_round, epochs=epochs,
                          batch_size=batch_size, seed=seed, heterogeneity=heterogeneity,
                          client_sizes=client_sizes, sampling=sampling, noise_seeds=noise_seeds,
                          whole_client_batches=whole_client_batches,
                          client_examples=client_examples)
