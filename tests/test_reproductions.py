"""Reproduction studies: valid configs, and a short end-to-end study writes its plot and table."""

import os

import pytest

from fl_tff import plotting, reproductions


@pytest.mark.parametrize('name', sorted(reproductions.STUDIES))
def test_every_study_has_valid_configs(tmp_path, name):
    configs = reproductions.study_configs(name, str(tmp_path))
    assert len(configs) == len(reproductions.STUDIES[name].variants) >= 2
    assert len({c.experiment_name for _, c in configs}) == len(configs)


def test_unknown_study_lists_choices(tmp_path):
    with pytest.raises(ValueError, match='unknown study .nope.; valid choices: async, byzantine, compression_uplink, dp_privacy_utility, fedavg_vs_fedsgd, fedprox_stragglers, personalization, qffl_fairness, scaffold_heterogeneity'):
        reproductions.study_configs('nope', str(tmp_path))


def test_plot_skips_missing_and_non_finite_points(tmp_path):
    path = str(tmp_path / 'p.png')
    rows = [{'round': 1, 'loss': 1.0}, {'round': 2}, {'round': 3, 'loss': float('nan')},
            {'round': 4, 'loss': 0.5}]
    plotting.plot_curves({'a': rows}, ['loss'], path, title='t', log_scale=['loss'],
                         hlines={'loss': 0.7})
    assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_short_fedprox_study_writes_png_and_table(tff_runtime, tmp_path):
    out = reproductions.run_study('fedprox_stragglers', str(tmp_path), rounds=4, log=lambda _: None)
    assert os.path.getsize(out['png']) > 1000
    text = open(out['markdown']).read()
    assert '| FedProx mu=1, partial work |' in text and '--rounds=4' in text
    assert [r['run'] for r in out['rows']] == [label for label, _ in
                                               reproductions.STUDIES['fedprox_stragglers'].variants]
    dropped, partial = out['rows'][0], out['rows'][2]
    assert dropped['clients aggregated per round (mean)'] == '1.00'  # 90% of 10 dropped
    assert partial['clients aggregated per round (mean)'] == '10.00'


def test_personalization_table_and_plot_read_the_last_evaluation(tmp_path):
    def stats(prefix, mean):
        return {f'{prefix}_{s}': mean + d for s, d in
                (('mean', 0.0), ('p10', -0.2), ('p50', 0.05), ('p90', 0.1), ('worst10pct', -0.3))}
    histories = {
        'fedavg': [{'round': 1, **stats('client_acc', 0.1), **stats('finetuned_acc', 0.2)},
                   {'round': 2}, {'round': 3, **stats('client_acc', 0.5),
                                  **stats('finetuned_acc', 0.6)}],
        'fedper': [{'round': 3, **stats('client_acc', 0.4), **stats('personal_acc', 0.7)}],
    }
    rows = {r['run']: r for r in reproductions._personalization_table(histories)}
    assert rows['fedavg']['global: mean / p10 / worst 10%'] == '0.500 / 0.300 / 0.200'
    assert rows['fedavg']['personalized by'] == 'fine-tuning the global model'
    assert rows['fedavg']['personalized mean'] == '0.600'
    assert rows['fedper']['personalized by'] == 'its personal part (FedRecon: reconstructed)'
    assert rows['fedper']['personalized worst10pct'] == '0.400'
    path = str(tmp_path / 'p.png')
    reproductions._plot_personalization(histories, path, 'title')
    assert os.path.getsize(path) > 1000


def test_async_table_counts_simulated_time_and_client_updates_to_the_target():
    rows = [dict(round=1, aggregated=10, sim_time=3.0, test_accuracy=0.5, staleness_mean=0.0),
            dict(round=2, aggregated=10, sim_time=5.0, staleness_mean=1.0),
            dict(round=3, aggregated=9, sim_time=8.0, test_accuracy=0.91, staleness_mean=2.0,
                 lost=1),
            dict(round=4, aggregated=10, sim_time=9.5, test_accuracy=0.93, staleness_mean=1.0)]
    never = [dict(round=1, aggregated=10, sim_time=2.0, test_accuracy=0.4, dropped=2)]
    table = {r['run']: r for r in reproductions._async_table({'a': rows, 'b': never})}
    assert table['a']['simulated seconds to 90%'] == '8' and table['a']['client updates to 90%'] == 29
    assert table['a']['mean staleness'] == '1.00' and table['a']['clients lost or dropped'] == 1
    assert table['b']['simulated seconds to 90%'] == 'not within 2'
    assert table['b']['client updates to 90%'] == 'not reached'
