"""Experiment configuration: plain values, validated before anything is built or traced."""

from __future__ import annotations

import dataclasses
import math
import os

from fl_tff.aggregation import AGGREGATORS
from fl_tff.algorithms import ALGORITHMS, SERVER_OPTIMIZERS
from fl_tff.data.arrays import DATASETS, NATURALLY_FEDERATED, SEQUENCE_DATASETS, TFF_DATASET_NAMES
from fl_tff.data.partition import PARTITIONERS
from fl_tff.communication.compression import COMPRESSIONS
from fl_tff.communication.error_feedback import SPARSIFIERS
from fl_tff.communication.compression import MAX_BITS as COMPRESSION_MAX_BITS
from fl_tff.communication.compression import MIN_BITS as COMPRESSION_MIN_BITS
from fl_tff.communication.secure import MAX_BITS, MIN_BITS
from fl_tff.privacy.accounting import SAMPLINGS
from fl_tff.privacy import distributed
from fl_tff.privacy.aggregators import DP_MODES, USER_LEVEL_MODES, min_clients_for_adaptive_clipping
from fl_tff.models.keras_models import MODELS, SEQUENCE_MODELS, SIZED_MODELS
from fl_tff.runtime import parse_workers
from fl_tff.simulation.fast import SIMULATIONS
from fl_tff.simulation.heterogeneity import (STRAGGLER_POLICIES, DeviceHeterogeneity,
                                             HeterogeneityError)

WEIGHTINGS = ('examples', 'uniform')
# auto = the dataset's own clients when it has them (natural), else dirichlet.
PARTITIONS = ('auto', 'natural', *PARTITIONERS)


# Field metadata of settings that do not change what a run computes (where files go, how often
# it evaluates or saves, how it waits, when it gives up): a rerun that differs from a saved run
# only in these resumes that run's directory. `rounds` is one too: a larger value extends a run.
RESULT_NEUTRAL = 'result_neutral'


def _neutral(default):
    return dataclasses.field(default=default, metadata={RESULT_NEUTRAL: True})


class ConfigError(ValueError):
    """An invalid setting; the message names the setting (as its flag) and the valid values."""

    def __init__(self, name: str, message: str):
        super().__init__(f'--{name}: {message}')
        self.name = name


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Field names are the driver's flag names."""

    # What is learned.
    algorithm: str = 'fedavg'
    dataset: str = 'digits'
    model: str = '2nn'
    hidden_units: int = 0
    # How the data is federated.
    partition: str = 'auto'
    alpha: float = 0.5
    classes_per_client: int = 2
    lognormal_sigma: float = 1.0
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    data_dir: str = ''
    num_clients: int = 20
    heldout_clients: int = 0
    clients_per_round: int = 10
    test_fraction: float = 0.2
    # Training.
    rounds: int = _neutral(50)
    client_epochs: int = 2
    client_batch_size: int = 10
    client_learning_rate: float = 0.05
    client_weighting: str = 'examples'
    mu: float = 0.0
    server_optimizer: str = 'sgd'
    server_learning_rate: float = 1.0
    server_momentum: float = 0.9
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_epsilon: float = 1e-3
    aggregator: str = 'mean'
    clip_norm: float = 1.0
    zeroing_norm: float = 10.0
    trim_fraction: float = 0.1
    # Differential privacy.
    dp: str = 'none'
    noise_multiplier: float = 1.0
    clip: float = 1.0
    target_unclipped_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    client_sampling: str = 'uniform'
    delta: float = 1e-5
    target_epsilon: float = 0.0
    # Secure aggregation.
    secure_agg: bool = False
    secure_bits: int = 16
    secure_range: float = 1.0
    # Compression.
    compression: str = 'none'
    compression_bits: int = 8
    compression_k: float = 0.1
    error_feedback: bool = False
    # Devices.
    straggler_fraction: float = 0.0
    straggler_policy: str = 'drop'
    dropout_rate: float = 0.0
    over_selection: float = 0.0
    # Execution.
    simulation: str = 'tff'
    workers: str = _neutral('')
    # Bookkeeping.
    seed: int = 0
    eval_every: int = _neutral(5)
    checkpoint_every: int = _neutral(10)
    divergence_factor: float = _neutral(10.0)
    output_dir: str = _neutral('runs')
    experiment_name: str = _neutral('')
    wait_for_lock: bool = _neutral(False)

    def result_settings(self) -> dict:
        """The settings that determine what the run computes (all but the result-neutral ones)."""
        return result_settings(dataclasses.asdict(self))

    def local_epochs(self) -> int:
        """Local epochs each client runs: `client_epochs`, or 1 for algorithms without local
        SGD (FedSGD's one gradient pass)."""
        return self.client_epochs if ALGORITHMS[self.algorithm].local_epochs else 1

    def heterogeneity(self) -> DeviceHeterogeneity:
        """The device-heterogeneity settings of this config."""
        return DeviceHeterogeneity(self.straggler_fraction, self.straggler_policy,
                                   self.dropout_rate, self.over_selection)

    def resolved_partition(self) -> str:
        """`partition`, with `auto` resolved for this dataset."""
        if self.partition == 'auto':
            return 'natural' if self.dataset in NATURALLY_FEDERATED else 'dirichlet'
        return self.partition

    def validate(self) -> 'ExperimentConfig':
        """Raises `ConfigError` on the first invalid setting; returns self when all are valid.

        Pure: it reads the config (and, for TFF's datasets, the data files) and builds nothing.
        Checks that need TFF objects, the output directory or the network are
        `experiment.preflight`'s.
        """
        _choice('algorithm', self.algorithm, ALGORITHMS)
        _choice('dataset', self.dataset, DATASETS)
        _choice('model', self.model, MODELS)
        _choice('partition', self.partition, PARTITIONS)
        _choice('client_weighting', self.client_weighting, WEIGHTINGS)
        _choice('server_optimizer', self.server_optimizer, SERVER_OPTIMIZERS)
        _choice('aggregator', self.aggregator, AGGREGATORS)
        _choice('straggler_policy', self.straggler_policy, STRAGGLER_POLICIES)
        for name in ('num_clients', 'clients_per_round', 'rounds', 'client_epochs',
                     'client_batch_size', 'eval_every', 'client_learning_rate',
                     'server_learning_rate', 'server_epsilon'):
            _positive(name, getattr(self, name))
        if self.clients_per_round > self.num_clients:  # Held-out clients are extra.
            raise ConfigError('clients_per_round', f'{self.clients_per_round} exceeds --num_clients='
                              f'{self.num_clients}; choose a value in [1, {self.num_clients}]')
        _non_negative('hidden_units', self.hidden_units)
        if self.hidden_units and self.model not in SIZED_MODELS:
            raise ConfigError('hidden_units', f'sets the width of {", ".join(SIZED_MODELS)}; '
                              f'{self.model} has none (leave it at 0)')
        _non_negative('heldout_clients', self.heldout_clients)
        self._validate_task()
        partition = self.resolved_partition()
        if partition == 'natural' and self.dataset not in NATURALLY_FEDERATED:
            raise ConfigError('partition', f'{self.dataset!r} has no natural clients; choose one of '
                              f'{", ".join(PARTITIONERS)} (or auto)')
        if partition == 'dirichlet':
            _positive('alpha', self.alpha)
        if partition == 'shards':
            _positive('classes_per_client', self.classes_per_client)
        if partition == 'quantity':
            _non_negative('lognormal_sigma', self.lognormal_sigma)
        if self.dataset == 'synthetic':
            _non_negative('synthetic_alpha', self.synthetic_alpha)
            _non_negative('synthetic_beta', self.synthetic_beta)
        if self.dataset in TFF_DATASET_NAMES:
            from fl_tff.data import tff_datasets
            try:
                tff_datasets.check_available(self.dataset, self.data_dir)
            except tff_datasets.MissingDatasetFileError as e:
                raise ConfigError('data_dir', str(e)) from e
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError('test_fraction', f'must be in (0, 1), got {self.test_fraction}')
        self._validate_algorithm()
        self._validate_devices()
        self._validate_privacy()
        self._validate_secure_aggregation()
        self._validate_compression()
        self._validate_simulation()
        _non_negative('seed', self.seed)
        _non_negative('checkpoint_every', self.checkpoint_every)
        _non_negative('divergence_factor', self.divergence_factor)
        if 0 < self.divergence_factor <= 1:
            raise ConfigError('divergence_factor', 'is a multiple of the initial loss: use a value '
                              f'> 1 (e.g. 10), or 0 to turn the loss rule off; got {self.divergence_factor}')
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ConfigError('output_dir', f'{self.output_dir!r} exists and is not a directory')
        if self.experiment_name and (os.sep in self.experiment_name or self.experiment_name in ('.', '..')):
            raise ConfigError('experiment_name', f'must be a plain name, got {self.experiment_name!r}')
        return self

    def _validate_task(self) -> None:
        """Sequence datasets need their sequence model and their own clients, and vice versa."""
        needed = SEQUENCE_DATASETS.get(self.dataset)
        if needed and self.model != needed:
            raise ConfigError('model', f'{self.dataset} is next-token prediction: use '
                              f'--model={needed} (got {self.model})')
        if not needed and self.model in SEQUENCE_MODELS:
            raise ConfigError('model', f'{self.model} needs a token-sequence dataset '
                              f'({", ".join(SEQUENCE_DATASETS)}); {self.dataset} is classification')
        if needed and self.resolved_partition() != 'natural':
            raise ConfigError('partition', f'{self.dataset} is federated by its authors: use '
                              f'--partition=natural (or auto), got {self.partition}')

    def _validate_algorithm(self) -> None:
        _non_negative('mu', self.mu)
        if self.mu > 0 and self.algorithm != 'fedprox':
            raise ConfigError('mu', f'is a FedProx setting; use --algorithm=fedprox (got {self.algorithm})')
        if self.server_optimizer == 'sgdm' and not 0.0 <= self.server_momentum < 1.0:
            raise ConfigError('server_momentum', f'must be in [0, 1), got {self.server_momentum}')
        if self.server_optimizer in ('adam', 'yogi'):
            for name in ('server_beta1', 'server_beta2'):
                if not 0.0 <= getattr(self, name) < 1.0:
                    raise ConfigError(name, f'must be in [0, 1), got {getattr(self, name)}')
        if self.aggregator == 'clip':
            _positive('clip_norm', self.clip_norm)
        if self.aggregator == 'zero':
            _positive('zeroing_norm', self.zeroing_norm)
        if self.aggregator == 'trimmed_mean' and not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError('trim_fraction', f'must be in [0, 0.5), got {self.trim_fraction}')

    def _validate_privacy(self) -> None:
        _choice('dp', self.dp, DP_MODES)
        _choice('client_sampling', self.client_sampling, SAMPLINGS)
        if self.client_sampling == 'poisson' and self.over_selection > 0:
            raise ConfigError('over_selection', 'needs a fixed cohort; --client_sampling=poisson '
                              'has none (use --client_sampling=uniform or --over_selection=0)')
        if self.dp == 'none':
            if self.target_epsilon:
                raise ConfigError('target_epsilon', 'is a privacy budget; choose a --dp mechanism '
                                  f'({", ".join(m for m in DP_MODES if m != "none")})')
            return
        _non_negative('noise_multiplier', self.noise_multiplier)
        _positive('clip', self.clip)
        if not 0.0 < self.delta < 1.0:
            raise ConfigError('delta', f'must be in (0, 1), got {self.delta}')
        _non_negative('target_epsilon', self.target_epsilon)
        if self.target_epsilon and self.noise_multiplier == 0:
            raise ConfigError('target_epsilon', 'cannot be met without noise: set --noise_multiplier > 0')
        if self.dp in USER_LEVEL_MODES:
            if self.client_weighting != 'uniform':
                raise ConfigError('client_weighting', f'--dp={self.dp} clips and sums each client\'s '
                                  'update with equal weight: use --client_weighting=uniform')
            if self.aggregator != 'mean':
                raise ConfigError('aggregator', f'--dp={self.dp} is the aggregator; use '
                                  f'--aggregator=mean (got {self.aggregator})')
        if self.dp == 'adaptive':
            if not 0.0 < self.target_unclipped_quantile < 1.0:
                raise ConfigError('target_unclipped_quantile',
                                  f'must be in (0, 1), got {self.target_unclipped_quantile}')
            _positive('clip_learning_rate', self.clip_learning_rate)
            needed = min_clients_for_adaptive_clipping(self.noise_multiplier)
            if self.noise_multiplier > 0 and self.clients_per_round < needed:
                raise ConfigError('clients_per_round', f'adaptive clipping at --noise_multiplier='
                                  f'{self.noise_multiplier:g} needs at least {needed} clients per '
                                  f'round (TFF\'s clipped-count noise is 0.05 per client and must '
                                  f'exceed z/2), got {self.clients_per_round}: raise it, lower the '
                                  'noise or use --dp=fixed')
        if self.dp == 'distributed' and not self.secure_agg:
            raise ConfigError('secure_agg', '--dp=distributed adds the noise on clients and needs '
                              'secure aggregation to sum it: add --secure_agg')
        if self.dp == 'dpsgd' and not ALGORITHMS[self.algorithm].local_epochs:
            raise ConfigError('dp', f'dpsgd runs in local SGD; {self.algorithm} has none (use '
                              'fedavg or fedprox)')

    def _validate_secure_aggregation(self) -> None:
        if not self.secure_agg:
            return
        if self.dp == 'distributed':
            self._validate_distributed_dp()
            return
        if not MIN_BITS <= self.secure_bits <= MAX_BITS:
            raise ConfigError('secure_bits', f'must be in [{MIN_BITS}, {MAX_BITS}], got {self.secure_bits}')
        _positive('secure_range', self.secure_range)
        if self.aggregator != 'mean':
            raise ConfigError('aggregator', f'{self.aggregator} must see each update; with '
                              '--secure_agg the server sees only their sum: use --aggregator=mean')
        if self.dp == 'adaptive':
            raise ConfigError('dp', 'adaptive clipping has no fixed range to quantize to; with '
                              '--secure_agg use --dp=fixed (its --clip is the range) or dpsgd')
        # The sum of the cohort's B-bit integers must fit in int32 (a Poisson cohort can be all).
        cohort = self.num_clients if self.client_sampling == 'poisson' else int(
            math.ceil(self.clients_per_round * (1 + self.over_selection)))
        if cohort * (2 ** self.secure_bits - 1) >= 2 ** 31:
            raise ConfigError('secure_bits', f'{self.secure_bits} bits x up to {cohort} clients per '
                              'round overflows the 32-bit secure sum; use at most '
                              f'{int(math.log2(2 ** 31 / cohort))} bits')

    def _validate_distributed_dp(self) -> None:
        """Distributed DP splits the noise into K client shares: every round needs exactly K
        clients (a smaller cohort would add less noise than the ledger charges)."""
        lo, hi = distributed.MIN_BITS, distributed.MAX_BITS
        if not lo <= self.secure_bits <= hi:
            raise ConfigError('secure_bits', f'--dp=distributed takes [{lo}, {hi}] bits (the modulus '
                              f'2^B of TFF\'s secure sum), got {self.secure_bits}')
        if self.client_sampling != 'uniform':
            raise ConfigError('client_sampling', '--dp=distributed needs exactly K clients a round '
                              '(the noise is split into K shares): use --client_sampling=uniform')
        if self.dropout_rate > 0 or (self.straggler_fraction > 0 and self.straggler_policy == 'drop'):
            raise ConfigError('dropout_rate' if self.dropout_rate > 0 else 'straggler_policy',
                              '--dp=distributed needs every selected client to report (each adds '
                              '1/K of the noise): set --dropout_rate=0 and, with stragglers, '
                              '--straggler_policy=partial')
        # TFF's own checks of these settings need its factory built: `experiment.preflight`.

    def _validate_compression(self) -> None:
        _choice('compression', self.compression, COMPRESSIONS)
        if self.error_feedback and self.compression not in SPARSIFIERS:
            raise ConfigError('error_feedback', 'keeps what a sparsifier dropped for the next '
                              f'round: use --compression={" or ".join(SPARSIFIERS)} (got '
                              f'{self.compression})')
        if self.compression == 'none':
            return
        if self.compression in ('quantize', 'rotate_quantize') and not (
                COMPRESSION_MIN_BITS <= self.compression_bits <= COMPRESSION_MAX_BITS):
            raise ConfigError('compression_bits', f'must be in [{COMPRESSION_MIN_BITS}, '
                              f'{COMPRESSION_MAX_BITS}], got {self.compression_bits}')
        if self.compression in ('topk', 'randk') and not 0.0 < self.compression_k <= 1.0:
            raise ConfigError('compression_k', 'is the fraction of each tensor kept: must be in '
                              f'(0, 1], got {self.compression_k}')
        for name, on in (('secure_agg', self.secure_agg), ('aggregator', self.aggregator != 'mean'),
                         ('dp', self.dp in USER_LEVEL_MODES)):
            if on:
                raise ConfigError(name, f'--compression={self.compression} compresses the plain '
                                  'mean; it does not combine with --secure_agg, robust aggregators '
                                  'or user-level DP')

    def _validate_simulation(self) -> None:
        """The fast path runs local SGD and the plain mean itself; everything else is TFF's."""
        _choice('simulation', self.simulation, SIMULATIONS)
        if self.workers:
            self._validate_workers()
        if self.simulation == 'tff':
            return
        others = (('algorithm', not ALGORITHMS[self.algorithm].local_epochs, self.algorithm),
                  ('aggregator', self.aggregator != 'mean', self.aggregator),
                  ('dp', self.dp != 'none', self.dp),
                  ('secure_agg', self.secure_agg, 'on'),
                  ('compression', self.compression != 'none', self.compression),
                  ('error_feedback', self.error_feedback, 'on'))
        for name, unsupported, value in others:
            if unsupported:
                raise ConfigError(name, f'--simulation={self.simulation} runs local SGD (fedavg, '
                                  'fedprox) with the plain weighted or uniform mean; '
                                  f'--{name}={value} needs TFF\'s runtime: use --simulation=tff')

    def _validate_workers(self) -> None:
        """Remote workers run TFF's mergeable form: one aggregation per round, no client outputs."""
        try:
            parse_workers(self.workers)
        except ValueError as e:
            raise ConfigError('workers', f'{e}; give host:port,host:port') from e
        if self.simulation != 'tff':
            raise ConfigError('simulation', f'--workers runs rounds on TFF workers; '
                              f'--simulation={self.simulation} runs them here: use one or the other')
        for name, refused, why in (
                ('secure_agg', self.secure_agg or self.dp == 'distributed',
                 'secure sums cannot be split across workers (TFF\'s mergeable form has no '
                 'secure-sum merge)'),
                ('error_feedback', self.error_feedback,
                 'client residuals are client outputs, which TFF\'s mergeable form cannot return')):
            if refused:
                raise ConfigError(name, f'--workers: {why}; run without --workers')

    def _validate_devices(self) -> None:
        if self.straggler_fraction > 0 and self.local_epochs() < 2:
            raise ConfigError('straggler_fraction', (
                f'stragglers run fewer than E local epochs, so they need E >= 2: set '
                f'--client_epochs >= 2 (it is {self.client_epochs})')
                if ALGORITHMS[self.algorithm].local_epochs else (
                f'{self.algorithm} computes one gradient pass per client per round, so no client '
                'can do partial work: use --straggler_fraction=0 (or --dropout_rate for clients '
                'that return nothing), or an algorithm with local epochs (fedavg, fedprox)'))
        try:
            self.heterogeneity().validate(self.local_epochs())
        except HeterogeneityError as e:
            raise ConfigError(e.field, str(e)) from e
        sampled = self.clients_per_round * (1 + self.over_selection)
        if sampled > self.num_clients + 1e-9:
            raise ConfigError('over_selection', f'selecting ceil({self.clients_per_round} x '
                              f'{1 + self.over_selection:g}) clients exceeds --num_clients={self.num_clients}')

    def run_name(self) -> str:
        """`experiment_name`, or a descriptive default built from the settings."""
        return self.experiment_name or (
            f'{self.dataset}_{self.algorithm}_{self.model}_{self.resolved_partition()}_'
            f'n{self.num_clients}_k{self.clients_per_round}_s{self.seed}')


def result_settings(values: dict) -> dict:
    """`values` (a config as a dict) without the result-neutral settings."""
    neutral = {f.name for f in dataclasses.fields(ExperimentConfig) if f.metadata.get(RESULT_NEUTRAL)}
    return {k: v for k, v in values.items() if k not in neutral}


def _choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(name, f'unknown value {value!r}; valid choices: {", ".join(sorted(choices))}')


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(name, f'must be > 0, got {value}')


def _non_negative(name: str, value) -> None:
    if not value >= 0:
        raise ConfigError(name, f'must be >= 0, got {value}')
