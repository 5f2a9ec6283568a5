"""Experiment configuration: plain values, validated before anything is built or traced."""

from __future__ import annotations

import dataclasses
import os

from fl_tff.algorithms import ALGORITHMS
from fl_tff.data.arrays import DATASETS
from fl_tff.data.partition import PARTITIONERS
from fl_tff.models.keras_models import MODELS

WEIGHTINGS = ('examples', 'uniform')


class ConfigError(ValueError):
    """An invalid setting; the message names the setting (as its flag) and the valid values."""

    def __init__(self, name: str, message: str):
        super().__init__(f'--{name}: {message}')
        self.name = name


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Field names are the driver's flag names."""

    algorithm: str = 'fedavg'
    dataset: str = 'digits'
    model: str = '2nn'
    hidden_units: int = 200
    partition: str = 'dirichlet'
    alpha: float = 0.5
    classes_per_client: int = 2
    lognormal_sigma: float = 1.0
    num_clients: int = 20
    clients_per_round: int = 10
    test_fraction: float = 0.2
    rounds: int = 50
    client_epochs: int = 2
    client_batch_size: int = 10
    client_learning_rate: float = 0.05
    server_learning_rate: float = 1.0
    client_weighting: str = 'examples'
    seed: int = 0
    eval_every: int = 5
    output_dir: str = 'runs'
    experiment_name: str = ''

    def validate(self) -> 'ExperimentConfig':
        """Raises `ConfigError` on the first invalid setting; returns self when all are valid."""
        _choice('algorithm', self.algorithm, ALGORITHMS)
        _choice('dataset', self.dataset, DATASETS)
        _choice('model', self.model, MODELS)
        _choice('partition', self.partition, PARTITIONERS)
        _choice('client_weighting', self.client_weighting, WEIGHTINGS)
        for name in ('num_clients', 'clients_per_round', 'rounds', 'client_epochs',
                     'client_batch_size', 'eval_every', 'hidden_units'):
            _positive(name, getattr(self, name))
        for name in ('client_learning_rate', 'server_learning_rate'):
            _positive(name, getattr(self, name))
        if self.clients_per_round > self.num_clients:
            raise ConfigError('clients_per_round', f'{self.clients_per_round} exceeds --num_clients='
                              f'{self.num_clients}; choose a value in [1, {self.num_clients}]')
        if self.partition == 'dirichlet':
            _positive('alpha', self.alpha)
        if self.partition == 'shards':
            _positive('classes_per_client', self.classes_per_client)
        if self.partition == 'quantity' and not self.lognormal_sigma >= 0:
            raise ConfigError('lognormal_sigma', f'must be >= 0, got {self.lognormal_sigma}')
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError('test_fraction', f'must be in (0, 1), got {self.test_fraction}')
        if self.seed < 0:
            raise ConfigError('seed', f'must be >= 0, got {self.seed}')
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ConfigError('output_dir', f'{self.output_dir!r} exists and is not a directory')
        if self.experiment_name and (os.sep in self.experiment_name or self.experiment_name in ('.', '..')):
            raise ConfigError('experiment_name', f'must be a plain name, got {self.experiment_name!r}')
        return self

    def run_name(self) -> str:
        """`experiment_name`, or a descriptive default built from the settings."""
        return self.experiment_name or (
            f'{self.dataset}_{self.algorithm}_{self.model}_{self.partition}_'
            f'n{self.num_clients}_k{self.clients_per_round}_s{self.seed}')


def _choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(name, f'unknown value {value!r}; valid choices: {", ".join(sorted(choices))}')


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(name, f'must be > 0, got {value}')
