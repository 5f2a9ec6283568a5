"""Per-round client selection and client dataset construction, deterministic for a seed."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import preprocessing
from fl_tff.simulation.heterogeneity import (DeviceHeterogeneity, RoundPlan, plan_round,
                                             selection_size)


class ClientSelector:
    """`round_num -> [client datasets]`: uniform sampling without replacement (TFF's sampler),
    device heterogeneity applied (see `heterogeneity`), each client's data shuffled with a seed
    derived from (seed, round, client).

    Callable with the signature `tff.simulation.run_training_process` expects; our loop also
    calls `plan` and `datasets` separately to report the round's participation counts.
    """

    def __init__(self, client_data: tff.simulation.datasets.ClientData, *, clients_per_round: int,
                 epochs: int, batch_size: int, seed: int,
                 heterogeneity: Optional[DeviceHeterogeneity] = None,
                 client_sizes: Optional[Mapping[str, int]] = None):
        self._client_data = client_data
        client_ids = list(client_data.client_ids)
        self._heterogeneity = heterogeneity or DeviceHeterogeneity()
        self._heterogeneity.validate(epochs)
        self._num_sampled = selection_size(clients_per_round, self._heterogeneity.over_selection)
        if not 1 <= clients_per_round <= len(client_ids) or self._num_sampled > len(client_ids):
            raise ValueError(f'cannot sample {self._num_sampled} clients per round from '
                             f'{len(client_ids)} (clients_per_round={clients_per_round})')
        if self._heterogeneity.over_selection > 0 and client_sizes is None:
            raise ValueError('over-selection needs client_sizes to simulate finishing times')
        self._clients_per_round, self._epochs = clients_per_round, epochs
        self._batch_size, self._seed = batch_size, seed
        self._client_sizes = client_sizes or {}
        self._position = {cid: i for i, cid in enumerate(client_ids)}
        self._sample = tff.simulation.build_uniform_sampling_fn(client_ids, replace=False,
                                                                random_seed=seed)

    def plan(self, round_num: int) -> RoundPlan:
        """Who is selected in `round_num` and who contributes with how many epochs."""
        return plan_round(round_num, self._sample(round_num, self._num_sampled),
                          clients_per_round=self._clients_per_round, epochs=self._epochs,
                          heterogeneity=self._heterogeneity, seed=self._seed,
                          client_sizes=self._client_sizes)

    def datasets(self, plan: RoundPlan) -> list[tf.data.Dataset]:
        """The preprocessed datasets of the plan's participants."""
        return [
            preprocessing.preprocess_client_dataset(
                self._client_data.create_tf_dataset_for_client(cid), epochs=epochs,
                batch_size=self._batch_size,
                shuffle_seed=preprocessing.derive_seed(self._seed, plan.round_num, self._position[cid]))
            for cid, epochs in plan.participants
        ]

    def __call__(self, round_num: int) -> list[tf.data.Dataset]:
        return self.datasets(self.plan(round_num))


def build_training_selection_fn(client_data: tff.simulation.datasets.ClientData, *,
                                clients_per_round: int, epochs: int, batch_size: int, seed: int,
                                heterogeneity: Optional[DeviceHeterogeneity] = None,
                                client_sizes: Optional[Mapping[str, int]] = None) -> ClientSelector:
    """A `ClientSelector` (see there); kept as the function name used across the library."""
    return ClientSelector(client_data, clients_per_round=clients_per_round, epochs=epochs,
                          batch_size=batch_size, seed=seed, heterogeneity=heterogeneity,
                          client_sizes=client_sizes)
