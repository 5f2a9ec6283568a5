"""Centralized labelled arrays and the datasets that ship inside installed packages (no download)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A centralized labelled dataset: features `x` (float32) and integer labels `y`."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int

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


DATASETS: dict[str, Callable[[], ArrayDataset]] = {
    'digits': load_digits,
}


def load_dataset(name: str) -> ArrayDataset:
    """Loads the centralized dataset registered as `name`."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; valid choices: {sorted(DATASETS)}')
    return DATASETS[name]()
