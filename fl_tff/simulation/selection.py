"""Per-round client selection and client dataset construction, deterministic for a seed."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import preprocessing


def build_training_selection_fn(
        client_data: tff.simulation.datasets.ClientData, *, clients_per_round: int, epochs: int,
        batch_size: int, seed: int) -> Callable[[int], list[tf.data.Dataset]]:
    """`round_num -> [client datasets]`: uniform sampling without replacement (TFF's sampler),
    each client's data shuffled with a seed derived from (seed, round, client).

    The returned function has the signature `tff.simulation.run_training_process` expects.
    """
    client_ids = list(client_data.client_ids)
    if not 1 <= clients_per_round <= len(client_ids):
        raise ValueError(f'clients_per_round must be in [1, {len(client_ids)}], got {clients_per_round}')
    position = {cid: i for i, cid in enumerate(client_ids)}
    sample = tff.simulation.build_uniform_sampling_fn(client_ids, replace=False, random_seed=seed)

    def select(round_num: int) -> list[tf.data.Dataset]:
        return [
            preprocessing.preprocess_client_dataset(
                client_data.create_tf_dataset_for_client(cid), epochs=epochs, batch_size=batch_size,
                shuffle_seed=preprocessing.derive_seed(seed, round_num, position[cid]))
            for cid in sample(round_num, clients_per_round)
        ]

    return select
