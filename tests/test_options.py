"""Options as declarations: a toy algorithm and a toy aggregator defined only here get their
flags, help, validation and builders through the driver path; the README's tables are derived."""

import dataclasses
import os

import pytest
import tensorflow_federated as tff
from absl import flags

from experiments import options_table, train
from fl_tff import config, experiment, options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.algorithms import ALGORITHMS, build_fedavg
from fl_tff.algorithms.fedavg import LOCAL_SGD_CAPABILITIES
from tests.helpers import max_abs_diff


def _build_toy_algorithm(model_fn, *, server_optimizer, toy_server_rate, **kwargs):
    """FedAvg whose server SGD runs at `toy_server_rate` (ignoring --server_optimizer)."""
    del server_optimizer
    return build_fedavg(model_fn, server_optimizer=tff.learning.optimizers.build_sgdm(
        toy_server_rate), **kwargs)


TOY_ALGORITHM = options.Option(
    'fedtoy', 'FedAvg with its own server rate',
    params=(options.Param('toy_server_rate', 1.0, 'Server SGD rate of fedtoy.', minimum=0.0,
                          min_open=True),),
    build=_build_toy_algorithm, provides=LOCAL_SGD_CAPABILITIES)

TOY_AGGREGATOR = options.Option(
    'toy_clip', 'the mean of updates clipped to --toy_clip_norm',
    params=(options.Param('toy_clip_norm', 1.0, 'Clip norm of toy_clip.', minimum=0.0,
                          min_open=True),),
    provides={options.REPLACES_MEAN},
    aggregator_layer=aggregator_chain.Layer(
        aggregator_chain.GUARD, lambda params, context, inner: tff.aggregators.clipping_factory(
            params['toy_clip_norm'], inner)))

SMALL = ['--dataset=digits', '--model=logreg', '--num_clients=6', '--clients_per_round=3',
         '--rounds=2', '--eval_every=2', '--client_epochs=1', '--client_batch_size=32',
         '--client_weighting=examples_processed']


@pytest.fixture(scope='module')
def toy_config_class():
    registries = tuple(
        r.with_options(TOY_ALGORITHM) if r.kind == 'algorithm' else
        r.with_options(TOY_AGGREGATOR) if r.kind == 'aggregator' else r
        for r in config.REGISTRIES)
    return config.make_config_class(registries, name='ToyConfig')


def _parse(config_class, argv):
    flag_values = flags.FlagValues()
    train.define_flags(config_class, flag_values)
    flag_values(['train', *argv])
    return flag_values, train.config_from_flags(config_class, flag_values)


def test_toy_options_get_flags_and_help_from_their_declarations(toy_config_class):
    flag_values, _ = _parse(toy_config_class, [])
    assert 'fedtoy: FedAvg with its own server rate' in flag_values['algorithm'].help
    assert 'toy_clip: the mean of updates clipped' in flag_values['aggregator'].help
    assert flag_values['toy_server_rate'].help == ('Server SGD rate of fedtoy. Range: > 0. Used by '
                                                   '--algorithm=fedtoy.')
    assert flag_values['toy_clip_norm'].default == 1.0
    # The retired simulation paths are still flags, as a clear error naming what replaced them.
    with pytest.raises(config.ConfigError, match='--simulation: --simulation=fast_xla was retired: '
                       'TFF.s runtime now builds each client.s data in the worker'):
        _parse(toy_config_class, SMALL + ['--algorithm=fedtoy', '--simulation=fast_xla'])[1].validate()
    # The library's own config is untouched by the toy registries.
    assert 'fedtoy' not in ALGORITHMS and 'toy_server_rate' not in {
        f.name for f in dataclasses.fields(config.ExperimentConfig)}


@pytest.mark.parametrize('argv,message', [
    (['--algorithm=fedtoy', '--toy_server_rate=0'], '--toy_server_rate: must be > 0, got 0.0'),
    (['--toy_server_rate=0.5'], '--toy_server_rate: is a setting of --algorithm=fedtoy; it has no '
                                'effect with --algorithm=fedavg'),
    (['--aggregator=toy_clip', '--secure_agg'],
     '--aggregator: --aggregator=toy_clip does not combine with --secure_agg'),
    (['--aggregator=toy_clip', '--dp=fixed', '--client_weighting=uniform'],
     '--aggregator: --aggregator=toy_clip does not combine with --dp=fixed'),
])
def test_toy_options_are_validated_by_their_params_and_capabilities(toy_config_class, argv, message):
    _, cfg = _parse(toy_config_class, SMALL + argv)
    with pytest.raises(config.ConfigError, match=message):
        cfg.validate()


def test_toy_algorithm_and_aggregator_run_through_the_driver_path(tff_runtime, toy_config_class,
                                                                  tmp_path):
    """The toy run equals the built-in FedAvg with the same server rate and TFF's clipping:
    the toy parameters reach their builders."""
    _, toy = _parse(toy_config_class, SMALL + [
        '--algorithm=fedtoy', '--toy_server_rate=0.5', '--aggregator=toy_clip',
        '--toy_clip_norm=0.05', f'--output_dir={tmp_path / "toy"}'])
    result = experiment.run_experiment(toy.validate(), log=lambda _: None)
    assert os.path.exists(os.path.join(result.run_dir, 'summary.json'))
    assert result.history[-1]['round'] == 2

    builtin = config.ExperimentConfig(
        **{**{k: v for k, v in dataclasses.asdict(toy).items()
              if k in {f.name for f in dataclasses.fields(config.ExperimentConfig)}},
           'algorithm': 'fedavg', 'server_learning_rate': 0.5, 'aggregator': 'clip',
           'clip_norm': 0.05, 'output_dir': str(tmp_path / 'builtin')})
    expected = experiment.run_experiment(builtin.validate(), log=lambda _: None)
    assert max_abs_diff(result.final_weights.trainable, expected.final_weights.trainable) == 0.0


def test_readme_option_tables_are_the_generated_ones():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, 'README.md')) as f:
        readme = f.read()
    assert options_table.generated_section() in readme, (
        'README.md is out of date: run `python -m experiments.options_table --write`')
    assert options_table.studies_section() in readme, (
        'README.md is out of date: run `python -m experiments.options_table --write`')
    assert options_table.modules_section() in readme, (
        'README.md\'s module map is out of date: run `python -m experiments.options_table --write`')


def test_the_module_map_is_read_from_the_docstrings(tmp_path):
    """A new module (or package) appears in the map with its docstring's first sentence, after
    the modules of its folder; abbreviations do not end the sentence."""
    for top in options_table.MAPPED:
        (tmp_path / top).mkdir()
    (tmp_path / 'fl_tff' / '__init__.py').write_text('"""The package. More."""\n')
    (tmp_path / 'fl_tff' / 'zeta.py').write_text('"""Zeta (Li et al. 2020, e.g. here). Details."""\n')
    (tmp_path / 'fl_tff' / 'pkg').mkdir()
    (tmp_path / 'fl_tff' / 'pkg' / '__init__.py').write_text('"""A package: of things."""\n')
    (tmp_path / 'fl_tff' / 'pkg' / 'alpha.py').write_text('x = 1\n')
    lines = options_table.module_map(str(tmp_path)).splitlines()
    assert lines[:4] == ['fl_tff/                 The package.',
                         '  zeta.py               Zeta (Li et al. 2020, e.g. here).',
                         '  pkg/                  A package: of things.',
                         '    alpha.py            (no docstring)']


def test_every_option_declares_only_known_capabilities_and_consistent_parameters():
    with pytest.raises(ValueError, match='unknown capabilities'):
        options.Option('x', 'x', provides={'teleports'})
    with pytest.raises(ValueError, match="parameter 'p' declared with defaults 1 and 2"):
        options.Registry('kind', 'k', [options.Option('a', '', params=(options.Param('p', 1, ''),)),
                                       options.Option('b', '', params=(options.Param('p', 2, ''),))],
                         default='a')
    for registry in config.REGISTRIES:
        registry.params()  # Raises on a conflict.
