"""Client preprocessing: raw client datasets to shuffled, repeated, batched `tf.data`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def derive_seed(*keys: int) -> int:
    """A 31-bit seed derived deterministically from integer keys, e.g. (run seed, round, client)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def preprocess_client_dataset(dataset: tf.data.Dataset, *, epochs: int, batch_size: int,
                              shuffle_seed: int, shuffle_buffer: int = 10_000,
                              batch_per_epoch: bool = False, whole: bool = False) -> tf.data.Dataset:
    """Seeded shuffle (reshuffled each epoch), `epochs` passes, batches of `batch_size`.

    Batches run across epoch boundaries, unless `batch_per_epoch` (DP-SGD: no batch may hold an
    example twice; each epoch is ceil(n / batch_size) steps). With `whole`, the same example
    stream comes as ONE element (all epochs): its consecutive `batch_size` chunks are exactly
    the batches, and tf.data hands it over in one call (the fast simulation path splits it).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f'epochs and batch_size must be >= 1, got {epochs} and {batch_size}')
    shuffled = dataset.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    if batch_per_epoch:
        if whole:
            raise ValueError('whole-client batches need batches that run across epochs')
        return shuffled.batch(batch_size).repeat(epochs)
    if whole:
        size = int(dataset.cardinality())
        if size < 0:
            raise ValueError('whole-client batches need a dataset of known size')
        return shuffled.repeat(epochs).batch(max(1, size * epochs))
    return shuffled.repeat(epochs).batch(batch_size)
