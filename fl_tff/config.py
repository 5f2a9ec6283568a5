"""Experiment configuration: plain values, validated before anything is built or traced.

`ExperimentConfig`'s fields are the base settings below plus, for every registry in
`REGISTRIES`, the field selecting one of its options and the options' parameters
(`fl_tff.options`). `make_config_class` builds such a class for other registries (e.g. a test's
toy algorithm); flags, help and validation follow from the class.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence

from fl_tff import options
from fl_tff.aggregators.registry import AGGREGATORS
from fl_tff.attacks import ATTACKS
from fl_tff.algorithms import ALGORITHMS, SERVER_OPTIMIZERS
from fl_tff.algorithms.client_optimizers import CLIENT_OPTIMIZERS
from fl_tff.algorithms.client_optimizer_states import CLIENT_OPTIMIZER_STATES
from fl_tff.communication.compression import COMPRESSIONS
from fl_tff.communication.error_feedback import ERROR_FEEDBACK
from fl_tff.communication.secure import SECURE_AGGREGATION
from fl_tff.secagg.tff_round import SECAGG
from fl_tff.data.datasets import DATASETS
from fl_tff.data import partition
from fl_tff.data.partition import PARTITIONS
from fl_tff.models.keras_models import MODELS
from fl_tff.privacy.modes import DP_MODES
from fl_tff.runtime import parse_workers
from fl_tff.simulation.worker_data import SIMULATIONS
from fl_tff.simulation import devices
from fl_tff.simulation.devices import DeviceSettings
from fl_tff.simulation.heterogeneity import STRAGGLER_POLICIES, DeviceHeterogeneity, HeterogeneityError
from fl_tff.simulation.selection import SAMPLINGS
from fl_tff.weighting import CLIENT_WEIGHTINGS

# Every kind of pluggable choice, in the order their hooks are consulted: the first selected
# option with a model aggregator (or an uplink encoding) supplies it, so DP before the SecAgg
# protocol's masked uploads before secure aggregation before error feedback before compression before the robust aggregators.
REGISTRIES: tuple[options.Registry, ...] = (
    ALGORITHMS, DATASETS, MODELS, PARTITIONS, CLIENT_WEIGHTINGS, CLIENT_OPTIMIZERS,
    CLIENT_OPTIMIZER_STATES, SERVER_OPTIMIZERS, DP_MODES, SAMPLINGS, SECAGG, SECURE_AGGREGATION, ERROR_FEEDBACK, COMPRESSIONS, AGGREGATORS, STRAGGLER_POLICIES,
    ATTACKS, SIMULATIONS)

# Field metadata of settings that do not change what a run computes (where files go, how often
# it evaluates or saves, how it waits, when it gives up): a rerun that differs from a saved run
# only in these resumes that run's directory. `rounds` is one too: a larger value extends a run.
RESULT_NEUTRAL = 'result_neutral'
HELP = 'help'

# What `--workers` and `--subrounds` cannot run, by capability: TFF's mergeable form has one
# aggregation per round and no client outputs.
_NOT_ON_WORKERS = {
    options.SECURE_SUM: 'secure sums cannot be split across workers or sub-rounds (TFF\'s '
                        'mergeable form has no secure-sum merge)',
    options.CLIENT_STATE: 'client state is a client output, which TFF\'s mergeable form cannot '
                          'return',
}


def _field(default, help: str, neutral: bool = False):
    return dataclasses.field(default=default, metadata={HELP: help, RESULT_NEUTRAL: neutral})


class ConfigError(ValueError):
    """An invalid setting; the message names the setting (as its flag) and the valid values."""

    def __init__(self, name: str, message: str):
        super().__init__(f'--{name}: {message}')
        self.name = name


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """The settings that belong to no option. Field names are the driver's flag names."""

    num_clients: int = _field(20, 'Number of clients in the population (devices, for synthetic '
                              'data).')
    heldout_clients: int = _field(0, 'Extra clients never trained on; each evaluation reports '
                                  'per-client accuracy on them (heldout_acc_mean/p10/p50/p90/'
                                  'worst10pct).')
    clients_per_round: int = _field(10, 'Clients aggregated each round (K): exactly K without '
                                    'replacement, or each client with rate K/N under '
                                    '--client_sampling=poisson.')
    test_fraction: float = _field(0.2, "Fraction of each client's examples held out as its test data.")
    finetune_epochs: int = _field(0, 'Personalized evaluation: at each evaluation every training '
                                  'client fine-tunes the global model on its training split for '
                                  'this many local epochs and is scored on its test split '
                                  '(finetuned_acc_mean/p10/p50/p90/worst10pct; held-out clients: '
                                  'heldout_finetuned_acc_*; 0: off).')
    rounds: int = _field(50, 'Number of federated rounds.', neutral=True)
    client_epochs: int = _field(2, 'Local epochs (E) over its data per client per round '
                                '(algorithms without local epochs: always 1 pass).')
    client_batch_size: int = _field(10, 'Local minibatch size.')
    client_learning_rate: float = _field(0.05, 'Client learning rate (of --client_optimizer).')
    server_learning_rate: float = _field(1.0, 'Server learning rate (sgd at 1.0 = plain averaging; '
                                         'FedSGD step size).')
    straggler_fraction: float = _field(0.0, 'Fraction of selected clients that are stragglers '
                                       '(random epochs in [1, E)).')
    dropout_rate: float = _field(0.0, 'Probability that a selected client drops out of its '
                                 'round, in [0, 1), at one point drawn uniformly: before training '
                                 'or before its upload (its update never arrives: 2/3 of the '
                                 'rate), or after its upload (its update counts; with --secagg it '
                                 'does not answer the unmasking request).')
    over_selection: float = _field(0.0, 'Select ceil(K (1 + r)) clients and aggregate the first K '
                                   'to finish (r >= 0).')
    round_deadline: float = _field(0.0, 'Simulated seconds after which a synchronous round stops '
                                   'waiting: slower clients are late and dropped (0: none).')
    device_profiles: str = _field('', 'CSV of device profiles (client_id, seconds_per_example, '
                                  'downlink_bytes_per_second, uplink_bytes_per_second, '
                                  'availability), one row per client, used instead of drawing them '
                                  '(see fl_tff.simulation.devices.load_profiles).')
    seconds_per_example: float = _field(0.01, 'Simulated clock: median compute seconds per example '
                                        'of local work.')
    device_speed_sigma: float = _field(1.0, 'Simulated clock: sigma of the log-normal spread of '
                                       'device speeds (0: identical devices).')
    downlink_mbps: float = _field(20.0, 'Simulated clock: median downlink bandwidth, Mbit/s (0: '
                                  'instant).')
    uplink_mbps: float = _field(5.0, 'Simulated clock: median uplink bandwidth, Mbit/s (0: '
                                'instant).')
    bandwidth_sigma: float = _field(0.0, 'Simulated clock: sigma of the log-normal spread of '
                                    'bandwidths.')
    intermittent_fraction: float = _field(0.0, 'Simulated clock: fraction of clients online only '
                                          'part of each --availability_period (a client offline '
                                          'at a round\'s start, or going offline before it '
                                          'finishes, returns nothing).')
    availability_period: float = _field(3600.0, 'Simulated clock: seconds of an intermittent '
                                        'client\'s on/off cycle (86400: diurnal).')
    availability_on_fraction: float = _field(0.5, 'Simulated clock: fraction of the cycle an '
                                             'intermittent client is online (at a random phase).')
    tree_restart: int = _field(0, 'Rounds per noise tree of --dp=tree, after which it and '
                               '--server_optimizer=ftrlm restart (0: one epoch of the '
                               'population, --num_clients // --clients_per_round rounds; else a '
                               'divisor of it).')
    workers: str = _field('', 'Run rounds on TFF worker services at host:port,host:port (started '
                          'with `python -m experiments.launch_workers`), splitting each round\'s '
                          'clients across them; empty: one local worker owned by this run.',
                          neutral=True)
    client_files_dir: str = _field('', 'Directory in which the driver writes the run\'s client '
                                   'files (one TFRecord per client, removed when the run ends); '
                                   'with --workers on other hosts, a path each of them reads at '
                                   'the same place (a shared file system). Empty: the system\'s '
                                   'temporary directory.', neutral=True)
    subrounds: int = _field(1, 'Run each round as this many sequential sub-rounds per worker, '
                            'merging partial aggregates (TFF\'s mergeable form): a worker holds '
                            'K / subrounds clients at once (e.g. 4 at K = 1,000: 1.9 GB instead '
                            'of 5.3 GB); 1: the whole cohort at once.')
    seed: int = _field(0, 'Seed for data, partitioning, sampling, devices, shuffling and '
                       'initialization.')
    eval_every: int = _field(5, 'Evaluate on test data every this many rounds (and after the last '
                             'round).', neutral=True)
    checkpoint_every: int = _field(10, 'Save the server state every this many rounds (0: only round '
                                   '0 and the last); rerunning the same command resumes from the '
                                   'newest checkpoint that loads (a larger --rounds extends a '
                                   'finished run).', neutral=True)
    divergence_factor: float = _field(10.0, 'Stop (exit 3, last good checkpoint kept) when the train '
                                      'loss exceeds this multiple of the initial model\'s loss; 0 '
                                      '= only on NaN/inf (see fl_tff.runs.divergence).', neutral=True)
    output_dir: str = _field('runs', 'Directory that receives one subdirectory per run.', neutral=True)
    experiment_name: str = _field('', 'Name of the run directory (default: built from the '
                                  'settings).', neutral=True)
    wait_for_lock: bool = _field(False, 'When another run holds the run directory, wait for it to '
                                 'finish instead of exiting with an error naming its PID.',
                                 neutral=True)

    # The registries this class's option fields come from (set by `make_config_class`).
    REGISTRIES: ClassVar[tuple[options.Registry, ...]] = ()

    def result_settings(self) -> dict:
        """The settings that determine what the run computes (all but the result-neutral ones)."""
        neutral = {f.name for f in dataclasses.fields(self) if f.metadata.get(RESULT_NEUTRAL)}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in neutral}

    def registry(self, kind: str) -> options.Registry:
        return next(r for r in self.REGISTRIES if r.kind == kind)

    def option(self, kind: str) -> options.Option:
        """The selected option of `kind` (ConfigError for an unknown one)."""
        return self.selection()[kind]

    def selection(self) -> options.Selection:
        """The selected option of every registry (`partition` resolved, see
        `resolved_partition`). Raises ConfigError naming an unknown choice."""
        chosen = {}
        for registry in self.REGISTRIES:
            value = getattr(self, registry.kind)
            if registry.kind == PARTITIONS.kind:
                value = self.resolved_partition()
            try:
                chosen[registry.kind] = (registry, registry.get(value))
            except options.OptionError as e:
                raise ConfigError(e.flag, str(e)) from e
        return options.Selection(chosen)

    def option_params(self, kind: str) -> dict[str, Any]:
        """The selected option's parameters, by name, as its builder takes them."""
        return {p.name: getattr(self, p.name) for p in self.option(kind).params}

    def aggregated_clients(self) -> int:
        """Client updates each aggregation receives: K = `clients_per_round`, or for an
        asynchronous algorithm its buffer (`buffer_size`; 1 without one, as FedAsync)."""
        if options.ASYNCHRONOUS in self.option('algorithm').provides:
            return self.option_params('algorithm').get('buffer_size', 1)
        return self.clients_per_round

    def local_epochs(self) -> int:
        """Local epochs each client runs: `client_epochs`, or 1 for algorithms without local
        epochs (FedSGD's one gradient pass)."""
        return (self.client_epochs if options.LOCAL_EPOCHS in self.option('algorithm').provides
                else 1)

    def heterogeneity(self) -> DeviceHeterogeneity:
        """The device-heterogeneity settings of this config."""
        return DeviceHeterogeneity(self.straggler_fraction, self.straggler_policy,
                                   self.dropout_rate, self.over_selection)

    def device_settings(self) -> DeviceSettings:
        """How the simulated clock draws (or reads) device profiles."""
        return DeviceSettings(
            seconds_per_example=self.seconds_per_example, speed_sigma=self.device_speed_sigma,
            downlink_mbps=self.downlink_mbps, uplink_mbps=self.uplink_mbps,
            bandwidth_sigma=self.bandwidth_sigma, intermittent_fraction=self.intermittent_fraction,
            period_seconds=self.availability_period, on_fraction=self.availability_on_fraction,
            profiles_file=self.device_profiles)

    def resolved_partition(self) -> str:
        """`partition`, with `auto` resolved: natural for a dataset with its own clients, else
        dirichlet."""
        dataset = self.registry('dataset').options.get(self.dataset)
        return partition.resolve(self.partition, dataset.provides if dataset else frozenset())

    def validate(self) -> 'ExperimentConfig':
        """Raises `ConfigError` on the first invalid setting; returns self when all are valid.

        Pure: it reads the config (and, for TFF's datasets, the data files) and builds nothing.
        Checks that need TFF objects, the output directory or the network are
        `experiment.preflight`'s.
        """
        try:
            self._validate()
        except options.OptionError as e:
            raise ConfigError(e.flag, str(e)) from e
        except HeterogeneityError as e:
            raise ConfigError(e.field, str(e)) from e
        return self

    def _validate(self) -> None:
        for name in ('num_clients', 'clients_per_round', 'rounds', 'client_epochs',
                     'client_batch_size', 'eval_every', 'client_learning_rate',
                     'server_learning_rate'):
            _positive(name, getattr(self, name))
        if self.clients_per_round > self.num_clients:  # Held-out clients are extra.
            raise ConfigError('clients_per_round', f'{self.clients_per_round} exceeds --num_clients='
                              f'{self.num_clients}; choose a value in [1, {self.num_clients}]')
        _non_negative('heldout_clients', self.heldout_clients)
        _non_negative('tree_restart', self.tree_restart)
        _non_negative('finetune_epochs', self.finetune_epochs)
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError('test_fraction', f'must be in (0, 1), got {self.test_fraction}')
        selection = self.selection()
        self._validate_param_ranges(selection)
        selection.check_compatibility(self.REGISTRIES)
        self._validate_unused_params(selection)
        self._validate_devices()
        if self.subrounds < 1 or self.subrounds > self.clients_per_round:
            raise ConfigError('subrounds', f'must be in [1, clients_per_round = '
                              f'{self.clients_per_round}], got {self.subrounds}')
        if self.workers or self.subrounds > 1:
            self._validate_workers(selection)
        for _, option in selection.items():
            if option.check is not None:
                option.check(self, selection)
        _non_negative('seed', self.seed)
        _non_negative('checkpoint_every', self.checkpoint_every)
        _non_negative('divergence_factor', self.divergence_factor)
        if 0 < self.divergence_factor <= 1:
            raise ConfigError('divergence_factor', 'is a multiple of the initial loss: use a value '
                              f'> 1 (e.g. 10), or 0 to turn the loss rule off; got {self.divergence_factor}')
        if self.client_files_dir and not os.path.isdir(self.client_files_dir):
            raise ConfigError('client_files_dir', f'{self.client_files_dir!r} is not a directory; '
                              'give an existing directory (shared with the workers), or leave it '
                              'empty for the system\'s temporary directory')
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ConfigError('output_dir', f'{self.output_dir!r} exists and is not a directory')
        if self.experiment_name and (os.sep in self.experiment_name or self.experiment_name in ('.', '..')):
            raise ConfigError('experiment_name', f'must be a plain name, got {self.experiment_name!r}')

    def _validate_param_ranges(self, selection: options.Selection) -> None:
        """Each selected option's parameters lie in their ranges."""
        for _, option in selection.items():
            for p in option.params:
                problem = p.problem(getattr(self, p.name))
                if problem:
                    raise ConfigError(p.name, problem)

    def _validate_unused_params(self, selection: options.Selection) -> None:
        """A parameter no selected option takes keeps its default (a changed one would silently
        do nothing)."""
        used = {p.name for _, option in selection.items() for p in option.params}
        for registry in self.REGISTRIES:
            for name, p in registry.params().items():
                if name in used or getattr(self, name) == p.default:
                    continue
                takers = ', '.join(registry.flag_text(o) for o in registry.users(name))
                raise ConfigError(name, f'is a setting of {takers}; it has no effect with '
                                  f'{selection.flag_text(registry.kind)} (leave it at '
                                  f'{p.default!r} or choose one of those)')

    def _validate_workers(self, selection: options.Selection) -> None:
        try:
            parse_workers(self.workers)
        except ValueError as e:
            raise ConfigError('workers', f'{e}; give host:port,host:port') from e
        flag = '--workers' if self.workers else '--subrounds'
        for capability, why in _NOT_ON_WORKERS.items():
            for kind, option in selection.items():
                if capability in option.provides:
                    raise ConfigError(kind, f'{flag}: {why} ({selection.flag_text(kind)}); run '
                                      f'without {flag} or choose another option')

    def _validate_devices(self) -> None:
        if self.straggler_fraction > 0 and self.local_epochs() < 2:
            raise ConfigError('straggler_fraction', (
                f'stragglers run fewer than E local epochs, so they need E >= 2: set '
                f'--client_epochs >= 2 (it is {self.client_epochs})')
                if options.LOCAL_EPOCHS in self.option('algorithm').provides else (
                f'--algorithm={self.algorithm} computes one gradient pass per client per round, '
                'so no client can do partial work: use --straggler_fraction=0 (or --dropout_rate '
                'for clients that return nothing), or an algorithm with local epochs'))
        self.heterogeneity().validate(self.local_epochs())
        problem = self.device_settings().problem()
        if problem:
            raise ConfigError(*problem)
        _non_negative('round_deadline', self.round_deadline)
        if self.device_profiles:
            try:
                devices.load_profiles(self.device_profiles, ())
            except devices.DeviceProfileError as e:
                raise ConfigError('device_profiles', str(e)) from e
        sampled = self.clients_per_round * (1 + self.over_selection)
        if sampled > self.num_clients + 1e-9:
            raise ConfigError('over_selection', f'selecting ceil({self.clients_per_round} x '
                              f'{1 + self.over_selection:g}) clients exceeds --num_clients={self.num_clients}')

    def run_name(self) -> str:
        """`experiment_name`, or a descriptive default built from the settings."""
        return self.experiment_name or (
            f'{self.dataset}_{self.algorithm}_{self.model}_{self.resolved_partition()}_'
            f'n{self.num_clients}_k{self.clients_per_round}_s{self.seed}')


def with_option_defaults(config_cls: type, given: Mapping[str, Any]) -> BaseConfig:
    """The config of the `given` settings, every other one at the default its selected options
    declare (`Option.defaults`, e.g. an algorithm's client weighting), else at the class's.

    An option selected through another's default may declare defaults of its own, so selection
    and defaults are resolved until they agree. Validation is the caller's (`validate`).

    Raises:
      ConfigError: Two selected options declare different defaults for a setting not given
        (naming it: set it).
    """
    values = dict(given)
    for _ in range(len(config_cls.REGISTRIES) + 1):
        config = config_cls(**values)
        try:
            selection = config.selection()
        except ConfigError:
            return config  # An unknown choice: `validate` names it.
        wanted: dict[str, tuple[Any, str]] = {}
        for kind, option in selection.items():
            for name, default in option.defaults.items():
                if name in given:
                    continue
                if name in wanted and wanted[name][0] != default.value:
                    raise ConfigError(name, f'{wanted[name][1]} and {selection.flag_text(kind)} '
                                      f'want different defaults ({wanted[name][0]!r} and '
                                      f'{default.value!r}); set --{name}')
                wanted[name] = (default.value, selection.flag_text(kind))
        if all(getattr(config, name) == value for name, (value, _) in wanted.items()):
            return config
        values.update({name: value for name, (value, _) in wanted.items()})
    return config_cls(**values)


def option_fields(registries: Sequence[options.Registry]) -> list[tuple[str, type, Any]]:
    """(name, type, field) of each registry's selecting field and of each parameter, once (a
    parameter several kinds share, like `secure_bits`, must have one default)."""
    base = {f.name for f in dataclasses.fields(BaseConfig)}
    kinds = [(r.kind, r.default, r.help_text()) for r in registries]
    params: dict[str, tuple[options.Param, list[str]]] = {}
    for registry in registries:
        for name, p in registry.params().items():
            if name in params and params[name][0].default != p.default:
                raise ValueError(f'parameter {name!r} declared with defaults '
                                 f'{params[name][0].default!r} and {p.default!r}')
            params.setdefault(name, (p, []))[1].extend(
                registry.flag_text(o) for o in registry.users(name))
    out, seen = [], set(base)
    entries = [(*kind, False) for kind in kinds] + [
        (name, p.default, f'{p.help}{" Range: " + p.range_text() + "." if p.range_text() else ""} '
         f'Used by {", ".join(users)}.', p.result_neutral) for name, (p, users) in params.items()]
    for name, default, help_text, neutral in entries:
        if name in seen:
            raise ValueError(f'config field {name!r} declared twice (a base setting, a kind or a '
                             'parameter)')
        seen.add(name)
        out.append((name, type(default), _field(default, help_text, neutral)))
    return out


def make_config_class(registries: Iterable[options.Registry] = REGISTRIES,
                      name: str = 'ExperimentConfig') -> type:
    """A frozen config dataclass: `BaseConfig`'s fields plus each registry's selecting field and
    its options' parameters. Tests pass registries with toy options (`Registry.with_options`)."""
    registries = tuple(registries)
    return dataclasses.make_dataclass(name, option_fields(registries), bases=(BaseConfig,),
                                      frozen=True, namespace={'REGISTRIES': registries,
                                                              '__module__': __name__})


ExperimentConfig = make_config_class()


def result_settings(values: dict, config_cls: Optional[type] = None) -> dict:
    """`values` (a config as a dict) without the result-neutral settings."""
    neutral = {f.name for f in dataclasses.fields(config_cls or ExperimentConfig)
               if f.metadata.get(RESULT_NEUTRAL)}
    return {k: v for k, v in values.items() if k not in neutral}


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(name, f'must be > 0, got {value}')


def _non_negative(name: str, value) -> None:
    if not value >= 0:
        raise ConfigError(name, f'must be >= 0, got {value}')
