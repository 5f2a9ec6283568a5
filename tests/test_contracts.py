"""Contract tests over the registries: every option is covered by what it declares, with no test
written for it by hand.

For each option of `CONTRACT_KINDS` (taken from the registries, so a new option is covered the
day it is registered):
- it validates in a tiny config (4 clients, logistic regression, digits), with the fewest of
  `COMPANIONS` a user would add beside it when it needs them (a weighting, a sampling, ...);
- it runs one round through the driver path (flags parsed from its declarations, the config
  validated, `experiment.run_experiment`) that moves the model, and the run's last checkpoint
  loads back equal to the run's final state; options of different kinds share runs
  (`covering_groups`: about a third as many runs as options, and every option meets others);
- every capability it `excludes` is refused, for each option that provides it, with one line
  naming a flag;
- an unknown value of every kind is refused with the valid choices taken from the registry.

`contract_cases(registries)` and the checks take the registries as arguments: the toy test at
the bottom adds an option in this file only and puts it through the same contract.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import tempfile
from typing import Iterator, Optional

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from experiments import train
from fl_tff import config, experiment, options
from fl_tff.runs import checkpoints
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.fedavg import LOCAL_SGD_CAPABILITIES
from tests.tff_files import write_shakespeare

# The kinds whose every option must run a round: what changes the round's computation.
CONTRACT_KINDS = ('algorithm', 'aggregator', 'attack', 'dp', 'compression', 'client_weighting',
                  'server_optimizer', 'client_sampling', 'secure_agg', 'secagg', 'error_feedback',
                  'straggler_policy', 'client_optimizer', 'client_optimizer_state')

TINY = dict(dataset='digits', model='logreg', num_clients=4, clients_per_round=4, rounds=1,
            eval_every=1, client_epochs=1, client_batch_size=32)

TEXT_DIR = '{text_dir}'  # Replaced by a directory holding a tiny shakespeare.sqlite.
# What a user adds beside an option that needs it, tried alone, then in pairs, then triples.
COMPANIONS: tuple[dict, ...] = (
    dict(client_weighting='uniform'),
    dict(client_weighting='examples_processed'),
    dict(client_epochs=2),
    dict(straggler_fraction=0.5, client_epochs=2),
    dict(secure_agg=True),
    dict(compression='topk'),
    dict(client_sampling='epochs'),
    dict(num_clients=12, clients_per_round=12),
    dict(num_clients=24),
    dict(model='2nn', hidden_units=8),
    dict(attack='sign_flip'),
    dict(client_optimizer='sgdm'),
    dict(dataset='shakespeare', model='char_lstm', partition='natural', data_dir=TEXT_DIR,
         hidden_units=8),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One option under contract (`kind` 'defaults': the all-defaults config)."""

    kind: str
    name: str

    @property
    def id(self) -> str:
        return f'{self.kind}={self.name}'

    def settings(self, config_cls, text_dir: str) -> Optional[dict]:
        """The tiny config it runs with (see `settings_for`)."""
        if self.kind == 'defaults':
            return dict(TINY)
        found = settings_for(config_cls, self.kind, self.name, text_dir)
        return None if found is None else dict(found)


def _value(registry: options.Registry, name: str):
    return name == 'on' if registry.boolean else name


def _fill(settings: dict, text_dir: str) -> dict:
    return {k: (text_dir if v == TEXT_DIR else v) for k, v in settings.items()}


def _problem(config_cls, settings: dict, text_dir: str) -> Optional[str]:
    """Why the driver refuses `settings` before any work: validation, then the options' checks
    against the model (`experiment.check_model`)."""
    try:
        cfg = config_cls(**_fill(settings, text_dir)).validate()
        experiment.check_model(cfg, _model_fn(cfg))
        return None
    except config.ConfigError as e:
        return str(e)


def _model_fn(cfg):
    """The run's model_fn; built once per model and dataset (the tiny configs share a few)."""
    key = (cfg.dataset, cfg.data_dir, cfg.model, cfg.hidden_units, cfg.num_clients)
    if key not in _MODEL_FNS:
        _MODEL_FNS[key] = experiment.build_model(cfg, experiment.load_federated_data(cfg))[0]
    return _MODEL_FNS[key]


_MODEL_FNS: dict = {}


def _retired(option: options.Option) -> bool:
    return option.check is not None and 'retired' in option.help


@functools.lru_cache(maxsize=None)
def settings_for(config_cls, kind: str, name: str, text_dir: str) -> Optional[dict]:
    """The tiny config with `kind=name` plus the fewest companions that make it valid (the
    driver's checks before any work pass), or None when none do."""
    registry = next(r for r in config_cls.REGISTRIES if r.kind == kind)
    base = {**TINY, kind: _value(registry, name)}
    candidates = [base]
    for n in (1, 2, 3):
        for combo in itertools.combinations(COMPANIONS, n):
            merged = {}
            for c in combo:
                merged.update(c)
            if any(k in merged and merged[k] != v for k, v in base.items() if k not in TINY):
                continue  # A companion may not change the option under test.
            candidates.append({**base, **merged})
    return next((c for c in candidates if _problem(config_cls, c, text_dir) is None), None)


def contract_cases(registries) -> Iterator[Case]:
    """One case per non-default option of `CONTRACT_KINDS`, plus the all-defaults config."""
    yield Case('defaults', 'all')
    for registry in registries:
        if registry.kind not in CONTRACT_KINDS:
            continue
        for name, option in registry.options.items():
            if name != registry.selected_name(registry.default) and not _retired(option):
                yield Case(registry.kind, name)


@dataclasses.dataclass(frozen=True)
class Group:
    """Options of different kinds that run together in one tiny config (`covering_groups`)."""

    members: tuple[Case, ...]
    settings: dict

    @property
    def id(self) -> str:
        return '+'.join(c.id for c in self.members)


def covering_groups(config_cls, text_dir: str) -> list[Group]:
    """Every case of `contract_cases`, in as few valid runs as a greedy packing gives: each
    group starts from the first case left (with the companions it needs) and takes, kinds with
    the most cases left first, each case of a kind not in it yet whose option (with its own
    companions) keeps the config valid. One run per group covers every option in it, and pairs
    them besides."""
    left = list(contract_cases(config_cls.REGISTRIES))
    registries = {r.kind: r for r in config_cls.REGISTRIES}
    groups = []
    while left:
        seed = left.pop(0)
        members, settings = [seed], seed.settings(config_cls, text_dir)
        if settings is None:  # `test_every_option_has_a_valid_tiny_config` reports it.
            continue
        remaining = collections.Counter(c.kind for c in left)
        for case in sorted(left, key=lambda c: -remaining[c.kind]):  # Stable: registry order.
            own = case.settings(config_cls, text_dir)
            if own is None or case.kind in settings and settings[case.kind] != TINY.get(
                    case.kind, registries[case.kind].default):
                continue  # A kind already chosen (by a member or a companion).
            extra = {k: v for k, v in own.items() if TINY.get(k, object()) != v}
            if any(k in settings and settings[k] != v and TINY.get(k, object()) != settings[k]
                   for k, v in extra.items()):
                continue  # Its companions would change a member's settings.
            if extra.get('dataset', settings['dataset']) != TINY['dataset'] or (
                    settings['dataset'] != TINY['dataset']):
                continue  # Another dataset runs alone: its model (an LSTM) is slow to build.
            trial = {**settings, **extra}
            if _problem(config_cls, trial, text_dir) is None:
                members.append(case)
                settings = trial
                left.remove(case)
        groups.append(Group(tuple(members), settings))
    return groups


def exclusion_cases(registries) -> Iterator[tuple[str, str, str, str, str]]:
    """(kind, option, capability, other kind, other option) for each declared exclusion and each
    option of another kind that provides the capability."""
    for registry in registries:
        for name, option in registry.options.items():
            for capability in sorted(option.excludes):
                for other in registries:
                    if other.kind == registry.kind:
                        continue
                    for other_name, other_option in other.options.items():
                        if capability in other_option.provides and not _retired(other_option):
                            yield registry.kind, name, capability, other.kind, other_name


def parse_driver_flags(config_cls, settings: dict):
    """The config the driver builds from `--name=value` flags of `settings` (flags defined from
    `config_cls`'s declarations, as `experiments.train` defines them)."""
    flag_values = flags.FlagValues()
    train.define_flags(config_cls, flag_values)
    argv = [(f'--{k}' if v else f'--no{k}') if isinstance(v, bool) else f'--{k}={v}'
            for k, v in settings.items()]
    flag_values(['train', *argv])
    return train.config_from_flags(config_cls, flag_values)


def check_runs_one_round_and_checkpoint_round_trips(config_cls, settings: dict, tmp_path) -> None:
    cfg = parse_driver_flags(config_cls, {**settings, 'output_dir': str(tmp_path / 'runs')})
    result = experiment.run_experiment(cfg.validate(), log=lambda _: None)
    (row,) = result.history
    assert row['round'] == 1
    assert np.isfinite(row['test_loss']) and 0.0 <= row['test_accuracy'] <= 1.0
    # The round moved the model (the same seed builds the initial one).
    model = experiment.build_model(cfg, experiment.load_federated_data(cfg))[1]()
    assert max(float(np.max(np.abs(np.asarray(a) - b.numpy())))
               for a, b in zip(result.final_weights.trainable, model.trainable_weights,
                               strict=True)) > 1e-6
    assert checkpoints.saved_rounds(result.run_dir)[-1] == 1
    loaded, round_num = checkpoints.Checkpointer(result.run_dir, every=0).latest(
        result.final_state)
    assert round_num == 1
    saved, final = tf.nest.flatten(loaded), tf.nest.flatten(result.final_state)
    assert len(saved) == len(final)
    for a, b in zip(saved, final):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def check_exclusion_refused(config_cls, kind, name, capability, other_kind, other_name,
                            text_dir) -> None:
    registries = {r.kind: r for r in config_cls.REGISTRIES}
    mine = settings_for(config_cls, kind, name, text_dir)
    theirs = settings_for(config_cls, other_kind, other_name, text_dir)
    if mine is None or theirs is None:
        pytest.skip('one of the two options has no valid tiny config (see the run contract)')
    merged = {**theirs, **mine, kind: mine[kind], other_kind: theirs[other_kind]}
    problem = _problem(config_cls, merged, text_dir)
    flag_a = registries[kind].flag_text(registries[kind][name])
    flag_b = registries[other_kind].flag_text(registries[other_kind][other_name])
    assert problem is not None, f'{flag_a} with {flag_b} validates though it excludes {capability}'
    # One line naming the flag to change; the pair's own rule, or an earlier rule that one of
    # them (or a setting it needs) trips first, names at least one of the two.
    assert len(problem.splitlines()) == 1 and problem.startswith('--'), problem
    assert flag_a in problem or flag_b in problem, problem


def check_unknown_value_lists_the_registry(config_cls, registry: options.Registry) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config_cls(**{**TINY, registry.kind: 'nope'}).validate()
    assert str(refused.value) == (f"--{registry.kind}: unknown {registry.kind} 'nope'; valid "
                                  f"choices: {', '.join(sorted(registry.names))}")


@pytest.fixture(scope='session')
def text_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp('contract_text')
    write_shakespeare(d)
    return str(d)


def _groups_at_collection() -> list[Group]:
    """`covering_groups`, computed while tests are collected (their ids name the options), with
    a text dataset of its own that is removed at once (the settings keep `TEXT_DIR`)."""
    with tempfile.TemporaryDirectory(prefix='fl_tff_contracts_') as d:
        write_shakespeare(d)
        return covering_groups(config.ExperimentConfig, d)


CASES = list(contract_cases(config.REGISTRIES))
GROUPS = _groups_at_collection()
EXCLUSIONS = list(exclusion_cases(config.REGISTRIES))


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.id)
def test_every_option_has_a_valid_tiny_config(case, text_dir):
    assert case.settings(config.ExperimentConfig, text_dir) is not None, (
        f'--{case.id} validates in no tiny config: add the setting it needs to COMPANIONS')


def test_the_groups_cover_every_option_once():
    covered = [c.id for g in GROUPS for c in g.members]
    assert sorted(covered) == sorted(c.id for c in CASES) and len(GROUPS) < len(CASES) / 2


@pytest.mark.parametrize('group', GROUPS, ids=lambda g: g.id)
def test_every_option_runs_one_round_and_round_trips_its_checkpoint(tff_runtime, group, tmp_path,
                                                                    text_dir):
    check_runs_one_round_and_checkpoint_round_trips(config.ExperimentConfig,
                                                    _fill(group.settings, text_dir), tmp_path)


@pytest.mark.parametrize('kind,name,capability,other_kind,other_name', EXCLUSIONS,
                         ids=lambda v: str(v))
def test_every_declared_exclusion_is_refused_in_one_line_naming_a_flag(
        kind, name, capability, other_kind, other_name, text_dir):
    check_exclusion_refused(config.ExperimentConfig, kind, name, capability, other_kind,
                            other_name, text_dir)


@pytest.mark.parametrize('registry', [r for r in config.REGISTRIES if not r.boolean],
                         ids=lambda r: r.kind)
def test_an_unknown_choice_lists_the_valid_ones_from_the_registry(registry):
    check_unknown_value_lists_the_registry(config.ExperimentConfig, registry)


# A toy option, declared here only: the contract covers it with no other test edited.
def _build_toy_algorithm(model_fn, *, toy_scale, **kwargs):
    """FedAvg (the toy's parameter only reaches its builder)."""
    assert toy_scale == 2.0
    return build_fedavg(model_fn, **kwargs)


TOY = options.Option(
    'fedtoy', 'FedAvg by another name',
    params=(options.Param('toy_scale', 1.0, 'A parameter of fedtoy.', minimum=0.0,
                          min_open=True),),
    build=_build_toy_algorithm, provides=LOCAL_SGD_CAPABILITIES,
    excludes={options.SECURE_SUM: 'the toy refuses secure sums'})


def test_a_toy_option_added_here_goes_through_the_whole_contract(tff_runtime, tmp_path, text_dir):
    registries = tuple(r.with_options(TOY) if r.kind == 'algorithm' else r
                       for r in config.REGISTRIES)
    config_cls = config.make_config_class(registries, name='ToyContractConfig')
    cases = {c.id: c for c in contract_cases(registries)}
    assert set(cases) == {c.id for c in CASES} | {'algorithm=fedtoy'}
    settings = cases['algorithm=fedtoy'].settings(config_cls, text_dir)
    assert settings == {**TINY, 'algorithm': 'fedtoy'}
    check_runs_one_round_and_checkpoint_round_trips(config_cls, {**settings, 'toy_scale': 2.0},
                                                    tmp_path)
    toy_exclusions = [e for e in exclusion_cases(registries) if e[1] == 'fedtoy']
    assert toy_exclusions == [('algorithm', 'fedtoy', options.SECURE_SUM, 'secure_agg', 'on')]
    for exclusion in toy_exclusions:
        check_exclusion_refused(config_cls, *exclusion, text_dir)
    check_unknown_value_lists_the_registry(config_cls, registries[0])
    with pytest.raises(AssertionError):  # The checks can fail: an exclusion left undeclared.
        lax = dataclasses.replace(TOY, excludes={})
        lax_registries = tuple(r.with_options(lax) if r.kind == 'algorithm' else r
                               for r in config.REGISTRIES)
        check_exclusion_refused(config.make_config_class(lax_registries, name='Lax'),
                                'algorithm', 'fedtoy', options.SECURE_SUM, 'secure_agg', 'on',
                                text_dir)
