"""Federated datasets as `tff.simulation.datasets.ClientData`, with train and test sides.

A centralized `ArrayDataset` is partitioned into clients; each client's examples are then
split into local train and test examples (as in LEAF). The centralized test set is the union of
all clients' test examples, so it never overlaps any client's training data. Held-out clients
(never trained on) keep all their examples for evaluation only.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import arrays
from fl_tff.data import partition as partition_lib


@dataclasses.dataclass
class FederatedData:
    """Train/test `ClientData`, the pooled test and train arrays, and a partition summary.

    `heldout` holds the clients kept out of training (all their examples), or None;
    `heldout_train` / `heldout_test` the same clients' train and test sides (for fine-tuning them
    at evaluation).
    """

    name: str
    train: tff.simulation.datasets.ClientData
    test: tff.simulation.datasets.ClientData
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    summary: dict
    train_x: np.ndarray
    train_y: np.ndarray
    heldout: Optional[tff.simulation.datasets.ClientData] = None
    heldout_train: Optional[tff.simulation.datasets.ClientData] = None
    heldout_test: Optional[tff.simulation.datasets.ClientData] = None
    masked_labels: tuple[int, ...] = ()
    accuracy_masked_labels: tuple[int, ...] = ()

    @property
    def train_sizes(self) -> dict[str, int]:
        """Number of training examples of each client, by client id."""
        return dict(zip(self.train.client_ids, self.summary['sizes']))

    @property
    def element_spec(self):
        """Element spec of a raw (un-batched) client dataset."""
        return self.train.element_type_structure


def client_id(index: int, prefix: str = 'client') -> str:
    """The id of client number `index` (zero-padded, so ids sort numerically)."""
    return f'{prefix}_{index:05d}'


def client_data_from_arrays(x: np.ndarray, y: np.ndarray, client_indices: list[np.ndarray],
                            id_prefix: str = 'client') -> tff.simulation.datasets.ClientData:
    """A `ClientData` whose client i holds `x[client_indices[i]], y[...]` as OrderedDict(x, y).

    The dataset function only slices constant arrays, so it is serializable inside TFF
    computations as well as usable eagerly.
    """
    ids = [client_id(i, id_prefix) for i in range(len(client_indices))]
    order = np.concatenate(client_indices) if client_indices else np.zeros([0], np.int64)
    x_sorted, y_sorted = x[order], y[order]
    sizes = np.array([len(ix) for ix in client_indices], np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes

    positions = {cid: i for i, cid in enumerate(ids)}

    def serializable_dataset_fn(cid) -> tf.data.Dataset:
        if isinstance(cid, (str, bytes)):
            # Eager path (create_tf_dataset_for_client): embed only this client's slice.
            i = positions[cid.decode() if isinstance(cid, bytes) else cid]
            return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
                x=x_sorted[starts[i]:ends[i]], y=y_sorted[starts[i]:ends[i]]))
        # Traced path (a string tensor, e.g. ClientData.dataset_computation).
        index = tf.reshape(tf.where(tf.equal(tf.constant(ids), cid)), [-1])[0]
        start, end = tf.gather(tf.constant(starts), index), tf.gather(tf.constant(ends), index)
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=tf.constant(x_sorted)[start:end], y=tf.constant(y_sorted)[start:end]))

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(ids, serializable_dataset_fn)


def split_client_examples(parts: partition_lib.Partition, test_fraction: float,
                          seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Splits each client's indices into (train, test); every client keeps >= 1 train example."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f'test_fraction must be in [0, 1), got {test_fraction}')
    rng = np.random.default_rng(seed)
    train, test = [], []
    for idx in parts:
        shuffled = rng.permutation(idx)
        n_test = min(int(round(test_fraction * idx.size)), idx.size - 1)
        test.append(np.sort(shuffled[:n_test]))
        train.append(np.sort(shuffled[n_test:]))
    return train, test


def build_federated_data(dataset: arrays.ArrayDataset, parts: partition_lib.Partition, *,
                         test_fraction: float = 0.2, seed: int = 0,
                         heldout: Sequence[int] = ()) -> FederatedData:
    """Builds train/test `ClientData` from a centralized dataset and a partition of it.

    Clients whose test side is empty (very small clients) appear only in `train`. The dataset's
    own test split is used when `parts` is its natural partition and it has one. The clients
    numbered in `heldout` are not trained on: all their examples (train and test sides) form
    `FederatedData.heldout`, with ids `heldout_00000`, ...
    """
    if parts is dataset.natural_partition and dataset.natural_test_partition is not None:
        train_idx, test_idx = list(parts), list(dataset.natural_test_partition)
    else:
        train_idx, test_idx = split_client_examples(parts, test_fraction, seed)
    heldout = sorted(set(int(i) for i in heldout))
    heldout_data, heldout_sides = None, [None, None]
    if heldout:
        if heldout[0] < 0 or heldout[-1] >= len(train_idx) or len(heldout) >= len(train_idx):
            raise ValueError(f'held-out clients {heldout} must be a proper subset of the '
                             f'{len(train_idx)} clients')
        heldout_data = client_data_from_arrays(
            dataset.x, dataset.y, [np.concatenate([train_idx[i], test_idx[i]]) for i in heldout],
            id_prefix='heldout')
        heldout_sides = [client_data_from_arrays(dataset.x, dataset.y, [side[i] for i in heldout],
                                                 id_prefix='heldout')
                         for side in (train_idx, test_idx)]
        kept = [i for i in range(len(train_idx)) if i not in set(heldout)]
        train_idx, test_idx = [train_idx[i] for i in kept], [test_idx[i] for i in kept]
    train = client_data_from_arrays(dataset.x, dataset.y, train_idx)
    keep = [i for i, t in enumerate(test_idx) if t.size > 0]
    if not keep:
        raise ValueError('no client has test examples; raise test_fraction')
    test_ids = [client_id(i) for i in keep]
    test_all = client_data_from_arrays(dataset.x, dataset.y, test_idx)
    test = test_all if len(keep) == len(test_idx) else _subset(test_all, test_ids)
    all_test = np.concatenate(test_idx)
    summary = partition_lib.summarize(dataset.y, train_idx, dataset.num_classes)
    summary['test_examples'] = int(all_test.size)
    summary['heldout_clients'] = len(heldout)
    all_train = np.concatenate(train_idx)
    return FederatedData(dataset.name, train, test, dataset.x[all_test], dataset.y[all_test],
                         dataset.num_classes, summary, dataset.x[all_train], dataset.y[all_train],
                         heldout=heldout_data, heldout_train=heldout_sides[0],
                         heldout_test=heldout_sides[1], masked_labels=dataset.masked_labels,
                         accuracy_masked_labels=dataset.accuracy_masked_labels)


def _subset(data: tff.simulation.datasets.ClientData,
            ids: list[str]) -> tff.simulation.datasets.ClientData:
    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(ids, data.serializable_dataset_fn)
