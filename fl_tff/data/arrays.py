"""Centralized labelled arrays (`ArrayDataset`), what every dataset loader returns, and the one
dataset shipped inside an installed package (scikit-learn's digits). The registry of datasets is
`fl_tff.data.datasets`."""

from __future__ import annotations

import dataclasses
from typing import Optional

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
