"""Plot and sweep tools, progress reporting."""

import csv
import dataclasses
import io
import json
import os

import pytest

from fl_tff.runs import reporting
from fl_tff.workflow import run_plots
from fl_tff.workflow import sweep
from fl_tff.config import ConfigError, ExperimentConfig
from tests.helpers import Figures, png_size


def _fake_run(path, **config):
    os.makedirs(path)
    with open(os.path.join(path, reporting.CONFIG_FILE), 'w') as f:
        json.dump({**{'seed': 0, 'output_dir': 'x', 'experiment_name': ''}, **config}, f)
    with open(os.path.join(path, reporting.METRICS_FILE), 'w') as f:
        f.write('round,train_loss,test_accuracy,uplink_bytes_total\n1,2.0,,100\n2,1.5,0.6,200\n')
    return str(path)


def test_plot_runs_labels_by_differing_settings_and_adds_byte_axis(tmp_path, monkeypatch):
    a = _fake_run(tmp_path / 'a', client_learning_rate=0.1, rounds=2)
    b = _fake_run(tmp_path / 'b', client_learning_rate=0.2, rounds=2)
    assert run_plots.legend_labels([run_plots.load_run(a)[0], run_plots.load_run(b)[0]]) == [
        'client_learning_rate=0.1', 'client_learning_rate=0.2']
    figures = Figures(monkeypatch)
    out = run_plots.plot_runs([a, b], str(tmp_path / 'p.png'))
    # Two metrics (columns) against the round and against the uplink bytes (rows).
    assert png_size(out) == (2 * 5.5 * 110, 2 * 4 * 110)
    panels = figures.only()['panels']
    assert [(p.xlabel, p.ylabel, p.yscale) for p in panels] == [
        ('round', 'test accuracy', 'linear'), ('round', 'train loss', 'log'),
        ('uplink bytes', 'test accuracy', 'linear'), ('uplink bytes', 'train loss', 'log')]
    for label in ('client_learning_rate=0.1', 'client_learning_rate=0.2'):
        assert panels[0].lines[label] == ([2.0], [0.6])  # Round 1 was not evaluated.
        assert panels[1].lines[label] == ([1.0, 2.0], [2.0, 1.5])
        assert panels[3].lines[label] == ([100.0, 200.0], [2.0, 1.5])
        assert label in panels[0].legend


def test_plot_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match='is not a run directory'):
        run_plots.plot_runs([str(tmp_path)], str(tmp_path / 'p.png'))


def test_parse_grid_converts_types_and_rejects_bad_entries():
    grid = sweep.parse_grid('client_learning_rate=0.02,0.05; client_epochs=1,2 ;algorithm=fedavg')
    assert grid == {'client_learning_rate': [0.02, 0.05], 'client_epochs': [1, 2],
                    'algorithm': ['fedavg']}
    for bad, match in [('lr=0.1', "unknown or reserved setting 'lr'"),
                       ('seed=1,2', "reserved setting 'seed'"),
                       ('client_epochs=two', 'client_epochs'), ('rounds', 'is not NAME=V1,V2'),
                       ('', 'empty grid')]:
        with pytest.raises(ConfigError, match=match):
            sweep.parse_grid(bad)


def test_sweep_validates_every_combination_before_running(tmp_path):
    base = ExperimentConfig(output_dir=str(tmp_path))
    configs = sweep.sweep_configs(base, {'client_epochs': [1, 2], 'rounds': [3]}, 3, 's')
    assert len(configs) == 6 and len({c.experiment_name for _, _, c in configs}) == 6
    assert [c.seed for _, _, c in configs[:3]] == [0, 1, 2]
    with pytest.raises(ConfigError, match='--client_learning_rate: must be > 0'):
        sweep.sweep_configs(base, {'client_learning_rate': [0.1, -1.0]}, 1, 's')
    assert not any(tmp_path.iterdir())


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_in_a_terminal_and_plain_lines_otherwise():
    row = {'round': 1, 'train_loss': 1.0, 'train_accuracy': 0.5, 'round_seconds': 0.1,
           'elapsed_seconds': 0.1, 'clients': 2}
    terminal, lines = _Terminal(), []
    bar = reporting.RoundReporter(4, 1, lines.append, stream=terminal)
    bar.round(row)
    bar.close()
    shown = terminal.getvalue()
    assert 'round 1/4' in shown and '/4 [' in shown and not lines  # the line and a tqdm bar
    plain = reporting.RoundReporter(4, 1, lines.append, stream=io.StringIO())
    plain.round(row)
    assert len(lines) == 1 and lines[0].startswith('round 1/4')


def test_a_diverging_sweep_point_is_recorded_and_the_sweep_still_summarizes(tff_runtime, tmp_path,
                                                                          monkeypatch):
    base = ExperimentConfig(output_dir=str(tmp_path), rounds=2, eval_every=1)
    figures = Figures(monkeypatch)
    out = sweep.run_sweep(base, {'client_learning_rate': [0.05, 50.0]}, 1, 's', log=lambda _: None)
    rows = {r['setting']: r for r in out['rows']}
    assert rows['client_learning_rate=50.0']['status'] == 'diverged: seed 0 at round 1'
    assert rows['client_learning_rate=50.0']['seeds'] == 0
    assert rows['client_learning_rate=0.05']['status'] == 'ok'
    assert rows['client_learning_rate=0.05']['seeds'] == 1
    # The plot shows the finished point only, evaluated after rounds 1 and 2.
    accuracy, loss = figures.only()['panels']
    assert set(accuracy.lines) == {'client_learning_rate=0.05'}
    assert accuracy.lines['client_learning_rate=0.05'][0] == [1.0, 2.0]
    assert png_size(os.path.join(out['dir'], 'sweep.png')) == (2 * 5.5 * 110, 4 * 110)
    with open(os.path.join(out['dir'], 'summary.csv')) as f:
        assert [r['status'] for r in csv.DictReader(f)] == ['ok', 'diverged: seed 0 at round 1']
    assert 'diverged: seed 0 at round 1' in open(os.path.join(out['dir'], 'summary.md')).read()


def test_a_diverging_reproduction_variant_is_a_table_row(tff_runtime, tmp_path, monkeypatch):
    from fl_tff import studies
    study = studies.STUDIES['fedavg_vs_fedsgd']
    monkeypatch.setitem(studies.STUDIES, 'tiny', dataclasses.replace(
        study, base={**study.base, 'rounds': 2},
        variants=(('FedAvg', {}), ('FedAvg, lr 50', {'client_learning_rate': 50.0}))))
    figures = Figures(monkeypatch)
    out = studies.run_study('tiny', str(tmp_path), log=lambda _: None)
    assert [r['status'] for r in out['rows']] == ['ok', 'diverged at round 1']
    assert '| FedAvg, lr 50 |' in open(out['markdown']).read()
    for panel in figures.only()['panels']:  # The diverged variant has no line.
        assert [k for k in panel.lines if not str(k).startswith('target')] == ['FedAvg']
