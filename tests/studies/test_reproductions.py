"""Reproduction studies: valid configs, and a short end-to-end study writes its plot and table."""


import pytest

from fl_tff import studies
from fl_tff.workflow import plotting
from fl_tff.runs import reporting
from fl_tff.studies import adaptive_optimizers as adaptive_study
from fl_tff.studies import asynchronous as async_study
from fl_tff.studies import personalization as personalization_study
from tests.helpers import Figures, png_size


@pytest.mark.parametrize('name', sorted(studies.STUDIES))
def test_every_study_has_valid_configs(tmp_path, name):
    configs = studies.study_configs(name, str(tmp_path))
    assert len(configs) == len(studies.STUDIES[name].variants) >= 2
    assert len({c.experiment_name for _, c in configs}) == len(configs)


@pytest.fixture(scope='module')
def tiny_tff_data(tmp_path_factory):
    from tests.tff_files import write_every_dataset
    d = tmp_path_factory.mktemp('tff_data')
    write_every_dataset(d)
    return str(d)


PAPER_SETTINGS = [(name, dataset) for name, study in sorted(studies.STUDIES.items())
                  for dataset in sorted(study.paper_settings)]


def test_every_study_says_what_it_was_designed_for_and_has_a_paper_setting():
    for name, study in studies.STUDIES.items():
        assert study.designed_for and study.paper_settings, name
        labels = {label for label, _ in study.variants}
        for paper in study.paper_settings.values():  # Labels it names are the study's.
            assert set(paper.keep or ()) | set(paper.variants) <= labels, name


@pytest.mark.parametrize('name,dataset', PAPER_SETTINGS)
def test_every_paper_setting_has_valid_configs_on_its_dataset(tmp_path, tiny_tff_data, name,
                                                              dataset):
    study = studies.STUDIES[name]
    paper = study.paper_settings[dataset]
    real = studies.RealData(dataset, tiny_tff_data)
    configs = studies.study_configs(name, str(tmp_path), real=real)
    labels = [label for label, _ in study.variants if paper.keep is None or label in paper.keep]
    assert [label for label, _ in configs] == labels
    for label, config in configs:
        assert (config.dataset, config.data_dir) == (dataset, tiny_tff_data)
        assert config.experiment_name.startswith(f'{name}_{dataset}_')
        # The paper's settings are the run's, whatever the study's base and variant say.
        for key, value in {**paper.base, **paper.variants.get(label, {})}.items():
            if value is not None:
                assert getattr(config, key) == value, (label, key)
    assert len({c.experiment_name for _, c in configs}) == len(configs)


def test_a_dataset_without_a_paper_setting_lists_the_studys_datasets(tmp_path, tiny_tff_data):
    valid = ', '.join(sorted(studies.STUDIES['fedprox_stragglers'].paper_settings))
    with pytest.raises(ValueError, match=f"study 'fedprox_stragglers' has no paper setting on "
                       f"dataset 'cifar100'; valid choices: {valid} \\(it was designed for "):
        studies.study_configs('fedprox_stragglers', str(tmp_path),
                                    real=studies.RealData('cifar100', tiny_tff_data))


def test_paper_setting_merges_base_variant_paper_replace_and_label_overrides():
    paper = studies.PaperSetting(
        source='s', base=dict(dataset='emnist', alpha=None, rounds=5),
        replace=dict(delta=1e-4, mu=0.5), variants={'b': dict(rounds=7)})
    study_settings = dict(dataset='digits', alpha=0.1, rounds=100, delta=1e-3, seed=3)
    assert paper.settings('a', study_settings) == dict(dataset='emnist', rounds=5, delta=1e-4,
                                                       seed=3)
    assert paper.settings('b', study_settings)['rounds'] == 7
    assert 'mu' not in paper.settings('a', study_settings)  # Replaced only where it is set.


def test_a_study_on_real_data_runs_the_papers_settings_and_writes_its_own_page(
        tmp_path, tiny_tff_data, monkeypatch):
    ran = []

    class Result:
        def __init__(self, config):
            self.history = [{'round': 1, 'test_accuracy': 0.5, 'global_train_loss': 1.0,
                             'aggregated': 10}]
            self.summary, self.run_dir = {}, config.output_dir

    def fake_run(config, log):
        ran.append(config)
        return Result(config)

    monkeypatch.setattr(studies.run, 'run_experiment', fake_run)
    out = studies.run_study('fedprox_stragglers', str(tmp_path), rounds=1,
                                  log=lambda _: None,
                                  real=studies.RealData('emnist62', tiny_tff_data))
    assert [(c.dataset, c.model, c.num_clients, c.client_learning_rate) for c in ran] == [
        ('emnist62', 'logreg', 200, 0.003)] * 3
    assert out['markdown'] == str(tmp_path / 'fedprox_stragglers_emnist62.md')
    text = open(out['markdown']).read()
    assert ('Command: `python -m experiments.reproduce --study=fedprox_stragglers '
            '--dataset=emnist62 --data_dir=DIR --rounds=1`') in text
    assert "On emnist62 with the paper's setting: Li et al. 2020" in text
    assert '--dataset=emnist62' in text and '--synthetic_alpha' not in text


def test_unknown_study_lists_choices(tmp_path):
    with pytest.raises(ValueError, match=f"unknown study 'nope'; valid choices: "
                       f"{', '.join(sorted(studies.STUDIES))}$"):
        studies.study_configs('nope', str(tmp_path))


def test_plot_skips_missing_and_non_finite_points(tmp_path, monkeypatch):
    figures = Figures(monkeypatch)
    path = str(tmp_path / 'p.png')
    rows = [{'round': 1, 'loss': 1.0}, {'round': 2}, {'round': 3, 'loss': float('nan')},
            {'round': 4, 'loss': 0.5}]
    plotting.plot_curves({'a': rows}, ['loss'], path, title='t', log_scale=['loss'],
                         hlines={'loss': 0.7})
    assert png_size(path) == (5.5 * 110, 4 * 110)
    figure = figures.only()
    (panel,) = figure['panels']
    assert figure['suptitle'] == 't' and (panel.xlabel, panel.ylabel) == ('round', 'loss')
    # A title longer than the figure is wide wraps instead of running off its edges.
    title = studies.STUDIES['async'].title
    plotting.plot_curves({'a': rows}, ['loss'], path, title=title)
    assert figures.saved[-1]['suptitle'].split() == title.split()
    assert '\n' in figures.saved[-1]['suptitle'] and figures.saved[-1]['titles_inside']
    assert panel.yscale == 'log' and panel.legend == ['a', 'target 0.7']
    assert panel.lines['a'] == ([1.0, 4.0], [1.0, 0.5])
    assert panel.lines['target 0.7'][1] == [0.7, 0.7]


def test_short_fedprox_study_writes_png_and_table(tff_runtime, tmp_path, monkeypatch):
    figures = Figures(monkeypatch)
    out = studies.run_study('fedprox_stragglers', str(tmp_path), rounds=4, log=lambda _: None)
    study = studies.STUDIES['fedprox_stragglers']
    panels = figures.only()['panels']
    assert [p.ylabel for p in panels] == [m.replace('_', ' ') for m in study.plot_metrics]
    for label, _ in study.variants:  # Each variant's line is its metrics.csv, evaluations only.
        rows = reporting.read_metrics(out['run_dirs'][label])
        for panel, metric in zip(panels, study.plot_metrics):
            xs, ys = panel.lines[label]
            expected = [(r['round'], r[metric]) for r in rows if r.get(metric) is not None]
            assert xs == [x for x, _ in expected] == [2, 4]
            assert ys == pytest.approx([y for _, y in expected])
    text = open(out['markdown']).read()
    assert '| FedProx mu=1, partial work |' in text and '--rounds=4' in text
    assert [r['run'] for r in out['rows']] == [label for label, _ in
                                               studies.STUDIES['fedprox_stragglers'].variants]
    dropped, partial = out['rows'][0], out['rows'][2]
    assert dropped['clients aggregated per round (mean)'] == '1.00'  # 90% of 10 dropped
    assert partial['clients aggregated per round (mean)'] == '10.00'


def test_personalization_table_and_plot_read_each_seeds_last_evaluation(tmp_path, monkeypatch):
    def stats(prefix, mean):
        return {f'{prefix}_{s}': mean + d for s, d in
                (('mean', 0.0), ('p10', -0.2), ('p50', 0.05), ('p90', 0.1), ('worst10pct', -0.3))}
    histories = {  # Two seeds each.
        'fedavg': [[{'round': 1, **stats('client_acc', 0.1), **stats('finetuned_acc', 0.2)},
                    {'round': 2}, {'round': 3, **stats('client_acc', 0.5),
                                   **stats('finetuned_acc', 0.6)}],
                   [{'round': 3, **stats('client_acc', 0.7), **stats('finetuned_acc', 0.8)}]],
        'fedper': [[{'round': 3, **stats('client_acc', 0.4), **stats('personal_acc', 0.7)}],
                   [{'round': 3, **stats('client_acc', 0.4), **stats('personal_acc', 0.9)}]],
    }
    rows = {r['run']: r for r in personalization_study._personalization_table(histories)}
    assert rows['fedavg']['seeds'] == 2
    assert rows['fedavg']['global mean'] == '0.600 ± 0.100'  # Last rows: 0.5 and 0.7.
    assert rows['fedavg']['global worst10pct'] == '0.300 ± 0.100'
    assert rows['fedavg']['personalized by'] == 'fine-tuning the global model'
    assert rows['fedavg']['personalized mean'] == '0.700 ± 0.100'
    assert rows['fedper']['personalized by'] == 'its personal part (FedRecon: reconstructed)'
    assert rows['fedper']['personalized worst10pct'] == '0.500 ± 0.100'
    assert rows['fedper']['personalized p10'] == '0.600 ± 0.100'
    path = str(tmp_path / 'p.png')
    figures = Figures(monkeypatch)
    personalization_study._plot_personalization(histories, path, 'title')
    assert png_size(path) == (6 * 110, 4.5 * 110)  # Two runs x two boxes: the minimum width.
    (panel,) = figures.only()['panels']
    assert panel.title == 'title' and panel.ylabel == 'per-client test accuracy'
    assert panel.legend == ['global model', 'personalized', 'mean', 'mean of the worst 10%']
    # Per box: its median bar, mean dot and worst-10% triangle, each the mean over the seeds.
    drawn = [y for key, (_, ys) in panel.lines.items() if isinstance(key, int) for y in ys]
    assert drawn == pytest.approx([0.65, 0.65, 0.6, 0.3, 0.75, 0.75, 0.7, 0.4,  # fedavg
                                   0.45, 0.45, 0.4, 0.1, 0.85, 0.85, 0.8, 0.5])  # fedper


def test_many_distributions_narrow_their_boxes_instead_of_widening_the_figure(tmp_path):
    stats = {s: 0.5 for s in ('mean', 'p10', 'p50', 'p90', 'worst10pct')}
    path = str(tmp_path / 'p.png')
    plotting.plot_distributions({f'run {i}': {'a': stats, 'b': stats} for i in range(14)}, path,
                                title='t')
    assert png_size(path) == (16 * 110, 4.5 * 110)  # 14 runs x 2 boxes would be 30.8 inches.


def test_a_study_with_seeds_runs_each_variant_per_seed_and_tabulates_them_all(tmp_path,
                                                                               monkeypatch):
    """`Study.seeds` without tuning: every variant runs seeds base..base+n-1, the table gets
    every seed's history, and the page says so without a grid table."""
    from fl_tff.workflow import sweep
    ran = []

    class Result:
        def __init__(self, config):
            self.history = [{'round': 1, 'seed': config.seed, 'test_accuracy': 0.5}]
            self.summary = {m: 0.0 for m in sweep.SUMMARY_METRICS}

    def fake_run(config, log):
        ran.append((config.algorithm, config.seed))
        return Result(config)

    monkeypatch.setattr(sweep, 'run_experiment', fake_run)
    tabled = {}

    def table(histories):
        tabled.update(histories)
        return [{'run': label, 'n': len(h)} for label, h in histories.items()]

    study = studies.Study(
        title='t', claim='c', base=dict(dataset='digits', model='logreg', rounds=1, seed=4),
        variants=(('a', dict(algorithm='fedavg')), ('b', dict(algorithm='fedprox', mu=0.1))),
        plot_metrics=(), table=table, plot=lambda histories, path, title: None, seeds=3)
    monkeypatch.setitem(studies.STUDIES, 'seeded', study)
    out = studies.run_study('seeded', str(tmp_path), log=lambda _: None)
    assert ran == [('fedavg', 4), ('fedavg', 5), ('fedavg', 6),
                   ('fedprox', 4), ('fedprox', 5), ('fedprox', 6)]
    assert {label: [h[0]['seed'] for h in seeds] for label, seeds in tabled.items()} == {
        'a': [4, 5, 6], 'b': [4, 5, 6]}
    assert [r['n'] for r in out['rows']] == [3, 3] and out['grid'] == []
    text = open(out['markdown']).read()
    assert 'Each run is 3 seeds (4 to 6): mean ± std over them.' in text
    assert 'Every grid point' not in text and 'chosen' not in text


def test_async_table_counts_simulated_time_and_client_updates_to_the_target():
    rows = [dict(round=1, aggregated=10, sim_time=3.0, test_accuracy=0.5, staleness_mean=0.0),
            dict(round=2, aggregated=10, sim_time=5.0, staleness_mean=1.0),
            dict(round=3, aggregated=9, sim_time=8.0, test_accuracy=0.91, staleness_mean=2.0,
                 lost=1),
            dict(round=4, aggregated=10, sim_time=9.5, test_accuracy=0.93, staleness_mean=1.0)]
    never = [dict(round=1, aggregated=10, sim_time=2.0, test_accuracy=0.4, dropped=2)]
    table = {r['run']: r for r in async_study._async_table({'a': rows, 'b': never})}
    assert table['a']['simulated seconds to 90%'] == '8' and table['a']['client updates to 90%'] == 29
    assert table['a']['mean staleness'] == '1.00' and table['a']['clients lost or dropped'] == 1
    assert table['b']['simulated seconds to 90%'] == 'not within 2'
    assert table['b']['client updates to 90%'] == 'not reached'


def _rows(*accuracies):
    return [{'round': 2 * (i + 1), 'test_accuracy': a, 'global_train_loss': 1.0 - a}
            for i, a in enumerate(accuracies)]


def test_tuned_study_keeps_the_grid_point_with_the_best_mean_over_seeds(tmp_path, monkeypatch):
    """The chosen point maximizes the mean (over seeds) of the last 20% of evaluations; a point
    where a seed diverged is never chosen, even with the best finished seed."""
    from fl_tff.workflow import sweep
    grids = {  # Per variant, what run_grid returns: (point, seed histories, diverged).
        'a': [({'server_learning_rate': 0.1}, [_rows(*[0.5] * 9, 0.80), _rows(*[0.5] * 9, 0.90)], []),
              ({'server_learning_rate': 1.0}, [_rows(*[0.5] * 9, 0.86), _rows(*[0.5] * 9, 0.86)], []),
              ({'server_learning_rate': 3.0}, [_rows(*[0.5] * 9, 0.99)], ['seed 1 at round 4'])],
        'b': [({'server_learning_rate': 1.0}, [], ['seed 0 at round 2', 'seed 1 at round 2'])],
    }
    calls = []

    def fake_run_grid(configs, log=print):
        variant = 'a' if not calls else 'b'
        calls.append([(point, seed) for point, seed, _ in configs])
        return [sweep.GridPoint(point, [{'final_test_accuracy': h[-1]['test_accuracy'],
                                         'best_test_accuracy': 1.0, 'final_global_train_loss': 0.1}
                                        for h in hs], hs, diverged)
                for point, hs, diverged in grids[variant]]

    study = studies.Study(
        title='t', claim='c', base=dict(dataset='digits', model='logreg', num_clients=4,
                                        clients_per_round=2, rounds=20, seed=5),
        variants=(('a', dict(server_optimizer='sgd')), ('b', dict(server_optimizer='adam'))),
        plot_metrics=(), table=adaptive_study._adaptive_table, plot=adaptive_study._plot_adaptive,
        tuning=studies.Tuning(grids=({'server_learning_rate': [0.1, 1.0, 3.0]},
                                           {'server_learning_rate': [1.0]}), seeds=2))
    monkeypatch.setitem(studies.STUDIES, 'tuned', study)
    monkeypatch.setattr(sweep, 'run_grid', fake_run_grid)
    figures = Figures(monkeypatch)
    out = studies.run_study('tuned', str(tmp_path), log=lambda _: None)
    # Every grid point x seed was asked for, seeds counted from the base seed.
    assert calls[0] == [({'server_learning_rate': v}, s) for v in (0.1, 1.0, 3.0) for s in (5, 6)]
    a, b = out['rows']
    # Tail means: 0.1 -> (0.65 + 0.70) / 2 = 0.675; 1.0 -> 0.68; 3.0 diverged.
    assert a['chosen'] == 'server_learning_rate=1.0'
    assert a['final test accuracy'] == '0.860 ± 0.000'
    assert a['test accuracy, last 20% of evaluations'] == '0.680 ± 0.000'
    assert a['rounds to 80%'] == '20.0 ± 0.0 (2/2 seeds)'
    assert b['status'].startswith('every grid point diverged: server_learning_rate=1.0 (seed 0')
    chosen = [r for r in out['grid'] if r['chosen'] == 'yes']
    assert [(r['run'], r['setting']) for r in chosen] == [('a', 'server_learning_rate=1.0')]
    assert [r['selected by'] for r in out['grid']] == ['0.6750', '0.6800', '', '']
    text = open(out['markdown']).read()
    assert 'Every grid point, 2 seeds each' in text and 'grid: server_learning_rate=0.1,1.0,3.0' in text
    # Only 'a' finished: its chosen point's two seeds (identical here) are its band's mean.
    accuracy, loss = figures.only()['panels']
    assert set(accuracy.lines) == {'a (2 seeds)', 'target 0.8'}
    assert accuracy.lines['a (2 seeds)'] == ([2.0 * (i + 1) for i in range(10)],
                                             pytest.approx([0.5] * 9 + [0.86]))
    assert loss.yscale == 'log' and loss.lines['a (2 seeds)'][1] == pytest.approx(
        [0.5] * 9 + [0.14])


def test_adaptive_table_reports_mean_and_std_over_seeds_and_seeds_that_reached_the_target():
    seeds = [_rows(0.5, 0.86, 0.9), _rows(0.5, 0.6, 0.7), _rows(0.9, 0.9, 0.88)]
    row, = adaptive_study._adaptive_table({'x': seeds})
    assert row['final test accuracy'] == '0.827 ± 0.090'  # mean 0.8267, std 0.0899
    assert row['rounds to 80%'] == '3.0 ± 1.0 (2/3 seeds)'  # Rounds 4 and 2.
    never, = adaptive_study._adaptive_table({'y': [_rows(0.1, 0.2)]})
    assert never['rounds to 80%'] == 'not reached (0/1 seeds)'


def test_seed_band_plot_uses_rounds_every_seed_has(tmp_path, monkeypatch):
    figures = Figures(monkeypatch)
    path = str(tmp_path / 'bands.png')
    plotting.plot_seed_bands({'a': [_rows(0.1, 0.2), _rows(0.3)], 'empty': [[{'round': 1}]]},
                             ['test_accuracy'], path, title='t', hlines={'test_accuracy': 0.5})
    assert png_size(path) == (5.5 * 110, 4 * 110)
    (panel,) = figures.only()['panels']
    # Round 2 is the only one both seeds of 'a' have: mean (0.1 + 0.3) / 2; 'empty' has none.
    assert panel.lines['a (2 seeds)'] == ([2.0], [pytest.approx(0.2)])
    assert set(panel.lines) == {'a (2 seeds)', 'target 0.5'} and panel.xlabel == 'round'


def test_a_tuned_study_needs_one_grid_per_variant(tmp_path, monkeypatch):
    study = studies.STUDIES['adaptive_optimizers']
    short = studies.Study(**{**{f: getattr(study, f) for f in study.__dataclass_fields__},
                                   'tuning': studies.Tuning(grids=study.tuning.grids[:-1])})
    monkeypatch.setitem(studies.STUDIES, 'short', short)
    with pytest.raises(ValueError, match="study 'short' has 7 variants but 6 tuning grids"):
        studies.study_configs('short', str(tmp_path))


def test_reproduce_driver_refuses_a_dataset_the_study_has_no_setting_for_in_one_line(tmp_path):
    from tests.helpers import run_python
    result = run_python(['-m', 'experiments.reproduce', '--study=fedprox_stragglers',
                         '--dataset=cifar100', f'--data_dir={tmp_path}',
                         f'--output_dir={tmp_path / "out"}'], timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if ' tensorflow/' not in line]
    assert lines == ["error: --dataset: study 'fedprox_stragglers' has no paper setting on "
                     "dataset 'cifar100'; valid choices: emnist62 (it was designed for "
                     f"{studies.STUDIES['fedprox_stragglers'].designed_for})"], result.stderr
    assert not (tmp_path / 'out').exists()
