"""Centralized labelled arrays and the dataset registry: data shipped inside installed packages,
and TFF's datasets read from `--data_dir` (`--download` fetches them, `fl_tff.data.download`)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Optional

import numpy as np

from fl_tff import options
from fl_tff.data import download


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


def _check_tff_dataset(name: str):
    def check(config, selection) -> None:
        del selection
        from fl_tff.data import tff_datasets
        if config.download and download.missing_files(name, config.data_dir):
            if not config.data_dir:
                raise options.OptionError('data_dir', f'--download needs --data_dir: the directory '
                                          f'{name}\'s files go to')
            return  # Fetched by `prepare`, after the server is found reachable by `preflight`.
        try:
            tff_datasets.check_available(name, config.data_dir)
        except tff_datasets.MissingDatasetFileError as e:
            raise options.OptionError('data_dir', str(e)) from e
    return check


def _reachable(name: str):
    def preflight(config) -> None:
        missing = download.missing_files(name, config.data_dir) if config.download else ()
        if missing:
            try:
                download.archive_sizes(name, missing, config.dataset_url)
            except download.DownloadUnavailableError as e:
                raise options.OptionError('download', str(e)) from e
    return preflight


def _fetch(name: str):
    def prepare(config) -> None:
        if config.download:
            try:
                download.fetch(name, config.data_dir, config.dataset_url,
                               show_progress=sys.stderr.isatty())
            except (download.DownloadUnavailableError, download.DownloadError) as e:
                raise options.OptionError('download', str(e)) from e
    return prepare


_DATA_DIR = options.Param('data_dir', '', 'Directory holding TFF dataset files (emnist_all.sqlite, '
                          'cifar100.sqlite, shakespeare.sqlite, stackoverflow.sqlite + '
                          'stackoverflow.word_count); see --download.')
_DOWNLOAD = options.Param('download', False, 'Fetch the dataset\'s missing files into --data_dir '
                          'before the run (from --dataset_url: sized first, resumable, verified, '
                          'atomic; also `python -m experiments.fetch_data`).',
                          result_neutral=True)
_DATASET_URL = options.Param('dataset_url', download.DEFAULT_URL, 'Where --download fetches '
                             'TFF\'s dataset archives (TFF\'s public bucket).',
                             result_neutral=True)
_SYNTHETIC = (options.Param('synthetic_alpha', 1.0, 'Synthetic(alpha, beta): how much local models '
                            'differ.', minimum=0.0),
              options.Param('synthetic_beta', 1.0, 'Synthetic(alpha, beta): how much local inputs '
                            'differ.', minimum=0.0))
_NATURAL_PARTITION = {options.NATURAL_PARTITION: 'is federated by its authors'}


def _tff_option(name: str, help: str, *provides: str, **kwargs) -> options.Option:
    return options.Option(name, help, params=(_DATA_DIR, _DOWNLOAD, _DATASET_URL),
                          build=_tff(name), provides={*provides, options.NATURAL_CLIENTS},
                          check=_check_tff_dataset(name), preflight=_reachable(name),
                          prepare=_fetch(name), **kwargs)


# Loaders take keyword arguments: seed, num_clients, synthetic_alpha, synthetic_beta, data_dir
# (each uses what it needs). All read offline; TFF's SQLite datasets from --data_dir
# (fl_tff.data.tff_datasets), of which --num_clients clients are sampled; `--download` fetches
# their files first (fl_tff.data.download).
DATASETS = options.Registry('dataset', 'Dataset (read offline; --download fetches TFF\'s).', [
    options.Option('digits', 'scikit-learn\'s 8x8 digits (1,797 images, 10 classes)',
                   build=lambda **_: load_digits(),
                   provides={options.CLASSIFICATION, options.IMAGES}),
    options.Option('synthetic', 'Synthetic(alpha, beta) of the FedProx paper, one client per device',
                   params=_SYNTHETIC, build=_synthetic,
                   provides={options.CLASSIFICATION, options.NATURAL_CLIENTS}),
    options.Option('synthetic_iid', 'the FedProx paper\'s IID synthetic data', build=_synthetic_iid,
                   provides={options.CLASSIFICATION, options.NATURAL_CLIENTS}),
    _tff_option('emnist', 'federated EMNIST digits (writers as clients)', options.CLASSIFICATION,
                options.IMAGES),
    _tff_option('emnist62', 'federated EMNIST, 62 classes', options.CLASSIFICATION, options.IMAGES),
    _tff_option('cifar100', 'federated CIFAR-100', options.CLASSIFICATION, options.IMAGES),
    _tff_option('shakespeare', 'Shakespeare next-character prediction (speakers as clients)',
                options.CHAR_SEQUENCES, options.PADDED_TOKENS, requires=_NATURAL_PARTITION),
    _tff_option('stackoverflow_nwp', 'Stack Overflow next-word prediction (users as clients)',
                options.WORD_SEQUENCES, options.PADDED_TOKENS, requires=_NATURAL_PARTITION),
], default='digits')


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Loads the dataset registered as `name` (kwargs: seed, num_clients, synthetic_alpha/beta,
    data_dir)."""
    defaults = dict(seed=0, num_clients=30, synthetic_alpha=1.0, synthetic_beta=1.0, data_dir='')
    return DATASETS.get(name).build(**{**defaults, **kwargs})
