"""Centralized labelled arrays and the datasets that ship inside installed packages (no download)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A centralized labelled dataset: features `x` (float32) and integer labels `y`.

    `natural_partition` holds the per-client index arrays of a naturally federated dataset
    (e.g. Synthetic's devices); None for a centralized one. `natural_test_partition`, when
    given, is the dataset's own per-client test split (TFF's datasets); otherwise each client's
    examples are split by `test_fraction`. For sequence tasks `x` holds int32 token ids and `y`
    one label per position; `masked_labels` (padding) are left out of the loss and accuracy,
    `accuracy_masked_labels` out of the accuracy too.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    natural_partition: Optional[list[np.ndarray]] = None
    natural_test_partition: Optional[list[np.ndarray]] = None
    masked_labels: tuple[int, ...] = ()
    accuracy_masked_labels: tuple[int, ...] = ()

    @property
    def is_sequence(self) -> bool:
        """Whether each example has one label per position (next-token prediction)."""
        return self.y.ndim > 1

    def __post_init__(self):
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f'{self.name}: {self.x.shape[0]} examples but {self.y.shape[0]} labels')


def load_digits() -> ArrayDataset:
    """scikit-learn's 1,797 handwritten 8x8 digits (10 classes), pixels scaled to [0, 1].

    Shipped inside scikit-learn, so it loads offline. Images have shape (8, 8, 1).
    """
    from sklearn import datasets as sk_datasets  # Imported lazily: sklearn is slow to import.
    digits = sk_datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    return ArrayDataset('digits', x, y, num_classes=10)


def _synthetic(**kwargs) -> ArrayDataset:
    from fl_tff.data import synthetic
    return synthetic.synthetic(kwargs['synthetic_alpha'], kwargs['synthetic_beta'],
                               num_devices=kwargs['num_clients'], seed=kwargs['seed'])


def _synthetic_iid(**kwargs) -> ArrayDataset:
    from fl_tff.data import synthetic
    return synthetic.synthetic(0.0, 0.0, num_devices=kwargs['num_clients'], seed=kwargs['seed'],
                               iid=True)


def _tff(name: str) -> Callable[..., ArrayDataset]:
    def load(**kwargs) -> ArrayDataset:
        from fl_tff.data import tff_datasets
        return tff_datasets.load_tff_dataset(name, kwargs['data_dir'], kwargs['num_clients'],
                                             kwargs['seed'])
    return load


# TFF's SQLite datasets (fl_tff.data.tff_datasets), read offline from --data_dir.
TFF_DATASET_NAMES = ('emnist', 'emnist62', 'cifar100', 'shakespeare', 'stackoverflow_nwp')
# Next-token prediction datasets and the model each needs (fl_tff.models.keras_models).
SEQUENCE_DATASETS = {'shakespeare': 'char_lstm', 'stackoverflow_nwp': 'word_lstm'}

# Loaders take keyword arguments: seed, num_clients, synthetic_alpha, synthetic_beta, data_dir
# (each uses what it needs).
DATASETS: dict[str, Callable[..., ArrayDataset]] = {
    'digits': lambda **_: load_digits(),
    'synthetic': _synthetic,
    'synthetic_iid': _synthetic_iid,
    **{name: _tff(name) for name in TFF_DATASET_NAMES},
}

# Datasets whose clients are given by the data (use --partition=natural or auto).
NATURALLY_FEDERATED = ('synthetic', 'synthetic_iid', *TFF_DATASET_NAMES)


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Loads the dataset registered as `name` (kwargs: seed, num_clients, synthetic_alpha/beta)."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; valid choices: {sorted(DATASETS)}')
    defaults = dict(seed=0, num_clients=30, synthetic_alpha=1.0, synthetic_beta=1.0, data_dir='')
    return DATASETS[name](**{**defaults, **kwargs})
