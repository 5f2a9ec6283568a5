"""`fl_tff.workflow.compatibility` and `experiments.compat_check`: every pair of choices enumerated from
the registries, refused ones with the validation's reason, runnable ones run for one round."""

import itertools
import math
import os
import subprocess
import sys

from fl_tff.workflow import compatibility
from fl_tff.config import REGISTRIES, ExperimentConfig


def test_pairs_are_every_two_non_default_choices_of_different_kinds():
    by_kind = {r.kind: [n for n in r if n != r.selected_name(r.default)] for r in REGISTRIES
               if r.kind in compatibility.KINDS}
    expected = sum(len(by_kind[a]) * len(by_kind[b])
                   for a, b in itertools.combinations(by_kind, 2))
    pairs = list(compatibility.combinations(REGISTRIES, 2))
    assert len(pairs) == expected
    assert {'algorithm': 'fedbuff', 'dp': 'fixed'} in pairs
    assert all(len(p) == 2 for p in pairs)


def test_a_pair_gets_the_helpers_it_needs_or_the_reason_it_is_refused():
    settings, refusal = compatibility.resolve(ExperimentConfig, {'algorithm': 'fedbuff',
                                                                 'dp': 'fixed'})
    assert refusal == '' and settings['client_weighting'] == 'uniform'
    assert settings['concurrency'] <= compatibility.TINY['num_clients']
    settings, refusal = compatibility.resolve(ExperimentConfig, {'secure_agg': True,
                                                                 'aggregator': 'median'})
    assert settings is None
    assert refusal.startswith('--aggregator: --aggregator=median does not combine with '
                              '--secure_agg: it must see each update')
    assert compatibility.flag_texts({'secure_agg': False, 'dp': 'fixed'}) == (
        '--nosecure_agg', '--dp=fixed')


def test_a_sample_of_triples_is_seeded_and_holds_only_runnable_ones():
    triples = list(compatibility.combinations(REGISTRIES, 3, ('algorithm', 'dp', 'secagg')))
    picked = compatibility.runnable_sample(ExperimentConfig, triples, 5, seed=3)
    assert len(picked) == 5 and picked == compatibility.runnable_sample(ExperimentConfig, triples,
                                                                        5, seed=3)
    assert all(compatibility.resolve(ExperimentConfig, t)[0] is not None for t in picked)
    assert picked != compatibility.runnable_sample(ExperimentConfig, triples, 5, seed=4)


def test_runnable_pairs_run_one_round_and_the_table_says_so(tff_runtime, tmp_path):
    results = [compatibility.run(ExperimentConfig, chosen, str(tmp_path)) for chosen in (
        {'algorithm': 'fedbuff', 'dp': 'fixed'}, {'compression': 'topk', 'aggregator': 'median'},
        {'secure_agg': True, 'aggregator': 'krum'})]
    assert [r.status for r in results] == ['pass', 'pass', 'refused']
    assert all(math.isfinite(float(r.detail.split()[-1])) for r in results[:2])
    assert '--client_weighting=uniform' in results[0].helpers
    text = compatibility.markdown(results, 'abc123', '2026-12-07')
    assert 'Commit abc123, 2026-12-07: 3 combinations: 2 pass, 1 refused.' in text
    assert '| `--compression=topk` `--aggregator=median` | pass |' in text
    assert os.listdir(tmp_path) == []  # Each run's directory is removed.


def test_the_driver_writes_the_table_and_refuses_unknown_kinds(tmp_path):
    output = tmp_path / 'compat.md'
    ok = subprocess.run([sys.executable, '-m', 'experiments.compat_check',
                         '--kinds=secagg,error_feedback', f'--output={output}'],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert '1 combinations: 1 refused' in output.read_text()
    bad = subprocess.run([sys.executable, '-m', 'experiments.compat_check', '--kinds=bogus',
                          f'--output={tmp_path / "x.md"}'], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith('error: --kinds: unknown bogus; valid '
                                                          'choices: algorithm, dp,')
    assert not (tmp_path / 'x.md').exists()
