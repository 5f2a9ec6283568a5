"""The absl driver: bad flags fail fast and clearly; runs are reproducible and leave no worker."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from fl_tff import experiment
from fl_tff.runs import reporting
from fl_tff.config import ExperimentConfig
from fl_tff.simulation import TIMING_COLUMNS
from fl_tff.algorithms import ALGORITHMS
from fl_tff.data.datasets import DATASETS
from fl_tff.data.partition import PARTITIONS
from tests.helpers import REPO_ROOT, live_worker_pids, run_driver_refusal, run_python, valid_choices

SMALL = dict(num_clients=8, clients_per_round=4, rounds=4, eval_every=2, model='logreg',
             client_epochs=1, client_batch_size=16, client_learning_rate=0.1)


def _not_a_database(data_dir):
    (data_dir / 'emnist_all.sqlite').write_bytes(b'this is not SQLite' * 100)


def _truncated_database(data_dir):
    import sqlite3
    path = data_dir / 'emnist_all.sqlite'
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE examples (split_name, client_id, serialized_example_proto)')
        db.execute('CREATE TABLE client_metadata (client_id, split_name, num_examples)')
        db.execute('INSERT INTO examples VALUES (?, ?, ?)', ('train', 'c0', b'x' * 50_000))
    with open(path, 'r+b') as f:
        f.truncate(4096)  # The schema page survives; the data is gone.


def _profiles_of_two_clients(data_dir):
    (data_dir / 'devices.csv').write_text(
        'client_id,seconds_per_example,downlink_bytes_per_second,uplink_bytes_per_second,'
        'availability\nclient_00000,0.1,0,0,always\nclient_00001,0.1,0,0,always\n')


def _empty_file(data_dir):
    (data_dir / 'emnist_all.sqlite').write_bytes(b'')


BAD_INPUTS = [
    (['--dataset=mnist'], f'--dataset: unknown dataset .mnist.; valid choices: {valid_choices(DATASETS)}$'),
    (['--partition=zipf'], f'--partition: unknown partition .zipf.; valid choices: {valid_choices(PARTITIONS)}$'),
    (['--algorithm=fedfoo'], f'--algorithm: unknown algorithm .fedfoo.; valid choices: {valid_choices(ALGORITHMS)}$'),
    (['--algorithm=fedper', '--personal_layers=3'], r'--personal_layers: personal_layers must be in \[0, 2\] for this model \(3 layers with trainable variables\), got 3 \(--model=2nn\)'),
    (['--algorithm=fedrep', '--head_epochs=2', '--client_epochs=2'], '--head_epochs: --head_epochs=2 leaves no epoch for the body'),
    (['--algorithm=fedrecon', '--client_weighting=examples'], r"--client_weighting: --algorithm=fedrecon weighs clients as TFF's build_fed_recon does \(--client_weighting=examples does not\): choose --client_weighting=examples_processed or --client_weighting=uniform"),
    (['--algorithm=fedprox', '--mu=-1'], '--mu: must be >= 0'),
    (['--server_optimizer=rmsprop'], '--server_optimizer: unknown server_optimizer .rmsprop.'),
    (['--straggler_fraction=1.5'], r'--straggler_fraction: straggler_fraction must be in \[0, 1\]'),
    (['--aggregator=trimmed_mean', '--trim_fraction=0.5'], r'--trim_fraction: must be in \[0, 0.5\)'),
    (['--dataset=synthetic', '--model=cnn', '--num_clients=30'], r'--dataset: --model=cnn needs image inputs \(height, width, channels\) \(--dataset=synthetic does not\)'),
    (['--dataset=emnist', '--data_dir=/nonexistent'], '--data_dir: emnist needs /nonexistent/emnist_all.sqlite'),
    (['--clients_per_round=21', '--num_clients=20'], '--clients_per_round: 21 exceeds --num_clients=20'),
    (['--rounds=0'], '--rounds: must be > 0'),
    (['--client_learning_rate=-0.1'], '--client_learning_rate: must be > 0'),
    (['--client_batch_size=0'], '--client_batch_size: must be > 0'),
    (['--alpha=0'], '--alpha: must be > 0'),
    (['--partition=shards', '--classes_per_client=4', '--num_clients=2', '--clients_per_round=2'],
     '--partition: num_clients \* classes_per_client = 8 < 10 classes'),
    # Found by trying the project as a new user (each a traceback, exit 1, before).
    (['--algorithm=fedsgd', '--straggler_fraction=0.5'],
     '--straggler_fraction: --algorithm=fedsgd computes one gradient pass per client per round'),
    (['--dataset=emnist', '--data_dir={data_dir}'], _empty_file,
     r'--data_dir: emnist: \S+emnist_all.sqlite has no table examples, client_metadata \(the file is empty\)'),
    (['--dataset=emnist', '--data_dir={data_dir}'], _not_a_database,
     r'--data_dir: emnist: \S+emnist_all.sqlite is not a readable SQLite database \(file is not a database\)'),
    (['--dataset=emnist', '--data_dir={data_dir}'], _truncated_database,
     r'--data_dir: emnist: \S+emnist_all.sqlite is (truncated \(4096 bytes; its header says \d+\)'
     r'|not a readable SQLite database \(database disk image is malformed\))'),
    (['--output_dir=/proc/fl_tff_runs'], r"--output_dir: cannot create '/proc/fl_tff_runs': No such file or directory in '/proc'"),
    (['--workers=127.0.0.1:1'], r'--workers: no TFF worker at 127.0.0.1:1 \(Connection refused\); start workers with'),
    (['--device_profiles={data_dir}/devices.csv'], _profiles_of_two_clients,
     r"--device_profiles: \S+devices.csv' has no profile for 18 clients, e.g. 'client_\d+'; give one row per client id"),
    (['--algorithm=fedbuff', '--buffer_size=25'],
     r'--buffer_size: 25 updates cannot fill the buffer with --concurrency=20 clients training'),
]


@pytest.mark.parametrize('case', BAD_INPUTS, ids=lambda case: ' '.join(case[0]))
def test_bad_input_exits_2_with_one_line_naming_the_flag_before_any_work(tmp_path, capsys, case):
    """The driver's main, in process: exit code, the whole of stderr, and no run directory."""
    from experiments import train
    flags, *prepare, message = case
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    for make in prepare:
        make(data_dir)
    out = tmp_path / 'runs'
    argv = [f'--output_dir={out}', *[f.format(data_dir=data_dir) for f in flags]]
    code = run_driver_refusal(train.main, argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --'), captured.err[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert 'Traceback' not in captured.err + captured.out
    # Rejected before any run directory, model or worker existed.
    assert not out.exists() or not any(out.iterdir())
    assert not os.path.exists('/proc/fl_tff_runs')


_NOISE = re.compile(r'Unable to register|Object was never used|tf_should_use|grappler|'
                    r'^\d{4}-\d\d-\d\d [\d:.]+: [IWEF] ', re.MULTILINE)


@pytest.mark.parametrize('extra', [['--secure_agg'], ['--dp=fixed', '--client_weighting=uniform']],
                         ids=['weighted_secure', 'dp_fixed'])
def test_runs_print_no_tensorflow_noise(tmp_path, extra):
    """Each of these printed ERROR lines that are not errors (TF's cuDNN/cuFFT/cuBLAS start-up
    lines, TFF's "Object was never used" block, a grappler line) though the run was fine."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.train', f'--output_dir={tmp_path}', '--model=logreg',
         '--rounds=1', '--num_clients=8', '--clients_per_round=4', '--client_epochs=1', *extra],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _NOISE.search(result.stdout + result.stderr), result.stderr[-3000:]
    assert 'final test accuracy' in result.stdout


@pytest.mark.parametrize('argv,message', [
    (['--dp_sgd'], "error: Unknown command line flag 'dp_sgd'; --helpfull lists the valid flags"),
    (['--rounds=abc'], "error: flag --rounds=abc: invalid literal for int()"),
])
def test_flags_that_do_not_parse_exit_2_with_one_line(capsys, argv, message):
    """absl's own parse errors (before the driver's checks): one line and exit 2, not exit 1."""
    from absl import flags
    from experiments import flag_parsing, train  # noqa: F401 (defines the flags)
    try:
        with pytest.raises(SystemExit) as exited:
            flag_parsing.parse_flags(['train', *argv])
    finally:
        flags.FLAGS.unparse_flags()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_a_failing_run_still_shows_its_error_and_only_that(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.train', f'--output_dir={tmp_path}', '--dataset=emnist',
         '--data_dir=/nonexistent'], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith('error: --data_dir: emnist needs /nonexistent/emnist_all.sqlite')
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_output_path_that_is_a_file_is_rejected_and_kept(tmp_path):
    a_file = tmp_path / 'out'
    a_file.write_text('keep me')
    result = run_python(['-m', 'experiments.train', f'--output_dir={a_file}'], timeout=120)
    assert result.returncode == 2
    assert 'error: --output_dir:' in result.stderr and 'not a directory' in result.stderr
    assert a_file.read_text() == 'keep me'


def test_helpfull_documents_every_flag():
    result = run_python(['-m', 'experiments.train', '--helpfull'], timeout=120)
    assert 'Exception ignored' not in result.stderr, result.stderr[-2000:]  # TFF's at exit.
    for field in dataclasses.fields(ExperimentConfig):
        name = field.name
        assert f'--{name}:' in result.stdout or f'--[no]{name}:' in result.stdout, name
    text = ' '.join(result.stdout.split())  # absl wraps help lines.
    assert 'fedprox: FedProx (Li et al. 2020)' in text  # Derived from the options.
    assert '--mu: FedProx proximal strength mu. Range: >= 0. Used by --algorithm=fedprox.' in text


def _metrics(run_dir):
    with open(os.path.join(run_dir, reporting.METRICS_FILE)) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def test_same_flags_and_seed_give_the_same_metrics(tff_runtime, tmp_path):
    first = experiment.run_experiment(ExperimentConfig(output_dir=str(tmp_path / 'a'), **SMALL),
                                      log=lambda _: None)
    second = experiment.run_experiment(ExperimentConfig(output_dir=str(tmp_path / 'b'), **SMALL),
                                       log=lambda _: None)
    other_seed = experiment.run_experiment(
        ExperimentConfig(output_dir=str(tmp_path / 'a'), seed=1, **SMALL), log=lambda _: None)
    assert other_seed.run_dir != first.run_dir  # other settings never touch an earlier run
    assert _metrics(first.run_dir) == _metrics(second.run_dir)
    assert _metrics(first.run_dir) != _metrics(other_seed.run_dir)
    rows = _metrics(first.run_dir)
    assert [r['round'] for r in rows] == ['1', '2', '3', '4']
    assert rows[1]['test_accuracy'] and not rows[0]['test_accuracy']
    for name in (reporting.CONFIG_FILE, reporting.FLAGS_FILE, reporting.SUMMARY_FILE,
                 reporting.PARTITION_FILE, reporting.FINAL_MODEL_FILE):
        assert os.path.exists(os.path.join(first.run_dir, name))
    with open(os.path.join(first.run_dir, reporting.FLAGS_FILE)) as f:
        assert '--rounds=4\n' in f.read()


def test_default_run_reaches_90_percent_through_a_pipe_and_leaves_no_worker(tmp_path):
    """The README's first command (default flags), its output piped as CI does."""
    before = live_worker_pids()
    cmd = f'{sys.executable} -m experiments.train --output_dir={tmp_path} | cat'
    result = subprocess.run(cmd, shell=True, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'round 50/50' in result.stdout
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    with open(run_dir / reporting.SUMMARY_FILE) as f:
        summary = json.load(f)
    assert summary['final_test_accuracy'] >= 0.90
    assert live_worker_pids() - before == set()
