"""TFF's standard federated datasets, read offline from their SQLite files.

`tff.simulation.datasets.<name>.load_data(cache_dir=DIR)` reads `DIR/<file>` without network
access when the file is there, and tries to download it when it is not. fl_tff never lets it
download: a missing file is one clear error that names the file and where it goes.

The SQLite format (tables `examples(split_name, client_id, serialized_example_proto)` and
`client_metadata(client_id, split_name, num_examples)`) is also what the tests build tiny
copies of. A seeded sample of `num_clients` clients is materialized in memory, keeping TFF's
own per-client train/test split.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from fl_tff.data.arrays import ArrayDataset


@dataclasses.dataclass(frozen=True)
class TffDatasetSpec:
    """Where a TFF dataset's file lives, how to load it and how to map an element to (x, y)."""

    file: str
    module: str
    load_kwargs: dict
    num_classes: int
    to_xy: Callable[[dict], tuple[np.ndarray, np.ndarray]]


def _emnist_xy(batch):
    return batch['pixels'][..., np.newaxis].astype(np.float32), batch['label'].astype(np.int32)


def _cifar_xy(batch):
    return (batch['image'].astype(np.float32) / 255.0), batch['label'].astype(np.int32)


TFF_DATASETS: dict[str, TffDatasetSpec] = {
    'emnist': TffDatasetSpec('emnist_all.sqlite', 'emnist', {'only_digits': True}, 10, _emnist_xy),
    'emnist62': TffDatasetSpec('emnist_all.sqlite', 'emnist', {'only_digits': False}, 62, _emnist_xy),
    'cifar100': TffDatasetSpec('cifar100.sqlite', 'cifar100', {}, 100, _cifar_xy),
}


class MissingDatasetFileError(FileNotFoundError):
    """The dataset's SQLite file is not in the data directory."""


class TooManyClientsError(ValueError):
    """More clients were requested than the dataset has."""


def expected_file(name: str, data_dir: str) -> str:
    """The path `name`'s SQLite file must have."""
    return os.path.join(data_dir or '.', TFF_DATASETS[name].file)


def check_available(name: str, data_dir: str) -> None:
    """Raises MissingDatasetFileError naming the expected file when it is absent."""
    path = expected_file(name, data_dir)
    if not data_dir or not os.path.isfile(path):
        spec = TFF_DATASETS[name]
        raise MissingDatasetFileError(
            f'{name} needs {os.path.abspath(path) if data_dir else "<data_dir>/" + spec.file}: put '
            f'{spec.file} (the file tff.simulation.datasets.{spec.module}.load_data caches, '
            'decompressed) in the directory given by --data_dir; fl_tff never downloads')


def load_tff_dataset(name: str, data_dir: str, num_clients: int, seed: int) -> ArrayDataset:
    """A seeded sample of `num_clients` clients of TFF dataset `name`, in memory.

    Returns an ArrayDataset whose `natural_partition` / `natural_test_partition` are each
    client's train / test examples as TFF splits them.
    """
    import tensorflow_federated as tff
    check_available(name, data_dir)
    spec = TFF_DATASETS[name]
    module = getattr(tff.simulation.datasets, spec.module)
    train, test = module.load_data(cache_dir=data_dir, **spec.load_kwargs)
    ids = sorted(train.client_ids)
    if num_clients > len(ids):
        raise TooManyClientsError(f'{name} has {len(ids)} clients; num_clients={num_clients} is too many')
    chosen = sorted(np.random.default_rng(seed).choice(ids, size=num_clients, replace=False))
    test_ids = set(test.client_ids)
    xs, ys, train_parts, test_parts, start = [], [], [], [], 0
    for side, parts in ((train, train_parts), (test, test_parts)):
        for cid in chosen:
            if side is test and cid not in test_ids:
                x, y = np.zeros([0, *xs[0].shape[1:]], np.float32), np.zeros([0], np.int32)
            else:
                x, y = _materialize(side.create_tf_dataset_for_client(cid), spec)
            xs.append(x)
            ys.append(y)
            parts.append(np.arange(start, start + len(y)))
            start += len(y)
    return ArrayDataset(name, np.concatenate(xs), np.concatenate(ys), spec.num_classes,
                        natural_partition=train_parts, natural_test_partition=test_parts)


def _materialize(dataset: tf.data.Dataset, spec: TffDatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    batches = [spec.to_xy(tf.nest.map_structure(lambda t: t.numpy(), b))
               for b in dataset.batch(4096)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
