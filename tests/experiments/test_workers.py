"""Multi-worker execution (`--workers`): rounds split across two TFF worker services on
127.0.0.1 give the single-process result; what cannot be split is refused up front."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import tensorflow_federated as tff

from fl_tff import experiment, runtime
from fl_tff.config import ConfigError, ExperimentConfig
from tests.helpers import wait_for_exit

BASE = ExperimentConfig(dataset='digits', model='2nn', hidden_units=200, num_clients=12,
                        clients_per_round=6, rounds=2, eval_every=2, seed=5)


@pytest.fixture
def two_workers():
    workers = [runtime.WorkerProcess().start() for _ in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


def _cpu_seconds(pid):
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _run(config, tmp_path, name):
    config = dataclasses.replace(config, output_dir=str(tmp_path), experiment_name=name)
    result = experiment.run_experiment(config, log=lambda _: None)
    return np.concatenate([np.ravel(t) for t in result.final_weights.trainable]), result


@pytest.mark.parametrize('overrides', [dict(), dict(dp='fixed', client_weighting='uniform',
                                                     noise_multiplier=0.5, clip=1.0)])
def test_two_workers_match_one_process(tff_runtime, tmp_path, two_workers, overrides):
    config = dataclasses.replace(BASE, **overrides)
    local, local_run = _run(config, tmp_path, 'local')
    before = [_cpu_seconds(w.pid) for w in two_workers]
    remote, remote_run = _run(dataclasses.replace(
        config, workers=','.join(w.address for w in two_workers)), tmp_path, 'remote')
    used = [_cpu_seconds(w.pid) - b for w, b in zip(two_workers, before)]
    assert np.abs(remote - local).max() <= 1e-5
    assert remote_run.summary['final_test_accuracy'] == pytest.approx(
        local_run.summary['final_test_accuracy'], abs=1e-6)
    # Each trains half of the clients: a share of the CPU time both used, whatever the speed.
    assert min(used) > 0.25 * sum(used), f'both workers must train clients (CPU seconds {used})'
    # Each worker receives the model state and its clients' tasks: each computation only in
    # round 1, and no partial aggregates (the driver's own worker merges them).
    weight_bytes = sum(4 * np.size(t) for t in remote_run.final_weights.trainable
                       + remote_run.final_weights.non_trainable)
    first, second = remote_run.history
    assert second['worker_bytes_sent_max'] <= 1.05 * weight_bytes
    assert first['worker_bytes_sent_max'] > 1.5 * weight_bytes


@pytest.mark.parametrize('overrides,flag', [
    (dict(secure_agg=True), 'secure_agg'),
    (dict(compression='topk', error_feedback=True), 'error_feedback'),
    (dict(simulation='fast'), 'simulation'),
    (dict(workers='localhost'), 'workers'),
])
def test_what_cannot_be_split_is_refused(overrides, flag):
    settings = {'workers': '127.0.0.1:1,127.0.0.1:2', **overrides}
    with pytest.raises(ConfigError, match=f'--{flag}'):
        dataclasses.replace(BASE, **settings).validate()


def test_launcher_starts_workers_and_stops_them_on_sigterm():
    proc = subprocess.Popen([sys.executable, '-m', 'experiments.launch_workers', '--num_workers=2'],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith('--workers=') and line.count(',') == 1
        pids = [int(p) for p in proc.stdout.readline().split(';')[0].split()[2:]]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert all(wait_for_exit(p) for p in pids)
    finally:
        proc.kill()


@pytest.mark.parametrize('overrides', [dict(), dict(algorithm='fednova'),
                                       dict(algorithm='mimelite')],
                         ids=['fedavg', 'fednova_side_upload', 'mimelite_weighted_side_upload'])
def test_subrounds_split_the_cohort_on_the_local_worker_and_match_one_round(
        tff_runtime, tmp_path, monkeypatch, overrides):
    """Also FedNova, whose round aggregates a side upload beside the update, and MIME-lite,
    whose side upload (its full-batch gradients) is weighted as the update."""
    made = []
    create = tff.backends.native.create_mergeable_comp_execution_context

    def spy(contexts, num_subrounds=None):
        made.append((len(contexts), num_subrounds))
        return create(contexts, num_subrounds=num_subrounds)

    monkeypatch.setattr(tff.backends.native, 'create_mergeable_comp_execution_context', spy)
    base = dataclasses.replace(BASE, **overrides)
    whole, _ = _run(base, tmp_path, 'whole')
    assert made == []
    split, _ = _run(dataclasses.replace(base, subrounds=3), tmp_path, 'split')
    assert made == [(1, 3)]  # One local worker, three sequential sub-rounds of 2 clients.
    assert np.abs(split - whole).max() <= 1e-5


@pytest.mark.parametrize('overrides,match', [
    (dict(subrounds=2, secure_agg=True), '--subrounds: secure sums'),
    (dict(subrounds=2, compression='topk', error_feedback=True), '--subrounds: client state'),
    (dict(subrounds=0), r'subrounds.*\[1, clients_per_round = 6\]'),
    (dict(subrounds=7), r'subrounds.*\[1, clients_per_round = 6\]'),
])
def test_subrounds_refuse_what_cannot_be_split(overrides, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(BASE, **overrides).validate()


def test_client_files_are_written_where_client_files_dir_says_and_removed_after(
        tff_runtime, tmp_path, monkeypatch):
    shared = tmp_path / 'shared'
    shared.mkdir()
    written = []
    write = experiment.client_files.write_client_files

    def spy(client_data, directory):
        written.append(directory)
        return write(client_data, directory)

    monkeypatch.setattr(experiment.client_files, 'write_client_files', spy)
    _run(dataclasses.replace(BASE, client_files_dir=str(shared)), tmp_path, 'run')
    assert len(written) == 1 and os.path.commonpath([written[0], str(shared)]) == str(shared)
    assert os.listdir(shared) == []  # Removed when the run ended.


def test_a_client_files_dir_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--client_files_dir: .*is not a directory"):
        dataclasses.replace(BASE, client_files_dir=str(tmp_path / 'missing')).validate()
