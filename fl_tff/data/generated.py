"""Client datasets generated on demand from the client id: populations of any size in constant
memory, for scale tests and benchmarks.

`generated_client_data` returns a TFF `ClientData` whose datasets are built, when asked for,
from stateless random ops seeded by a hash of the client id: nothing is stored per client and
the same id always gives the same examples. A dataset holds its examples only while it lives
(one round).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def generated_client_data(num_clients: int, examples_per_client: int, *,
                          features: Union[int, Sequence[int]] = 784,
                          num_classes: int = 10, seed: int = 0
                          ) -> tff.simulation.datasets.ClientData:
    """`num_clients` clients ('00000', ...) of `examples_per_client` examples each: features
    (`features` values, or an example of shape `features`, e.g. (28, 28, 1) images) uniform in
    [0, 1), labels uniform over `num_classes` (a throughput workload, not a learnable task)."""
    if num_clients < 1 or examples_per_client < 1:
        raise ValueError(f'need >= 1 clients and examples, got {num_clients} and {examples_per_client}')
    shape = [int(features)] if np.ndim(features) == 0 else [int(d) for d in features]
    width = len(str(num_clients - 1))
    client_ids = [f'{i:0{width}d}' for i in range(num_clients)]

    def dataset_fn(client_id) -> tf.data.Dataset:
        # Generated eagerly, then sliced: a `map` inside the pipeline would trace a new function
        # for every dataset, which TensorFlow keeps for the life of the process (memory would
        # grow with rounds x clients per round).
        key = tf.strings.to_hash_bucket_fast(client_id, 2 ** 31 - 1)
        stream = tf.stack([tf.constant(seed, tf.int64), key])
        x = tf.random.stateless_uniform([examples_per_client, *shape], seed=stream)
        y = tf.random.stateless_uniform([examples_per_client], seed=stream + 1, maxval=num_classes,
                                        dtype=tf.int32)
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(client_ids, dataset_fn)
