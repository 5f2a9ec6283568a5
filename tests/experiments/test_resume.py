"""Checkpoint/resume (kill -9 included), divergence, final model, per-client evaluation."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import evaluation, experiment, models, reporting
from fl_tff.algorithms import build_fedavg
from fl_tff.config import ExperimentConfig
from fl_tff.simulation import TIMING_COLUMNS
from tests.helpers import REPO_ROOT, live_worker_pids

FLAGS = ['--model=logreg', '--rounds=30', '--eval_every=2', '--checkpoint_every=3',
         '--num_clients=8', '--clients_per_round=4', '--client_epochs=1', '--client_batch_size=32']


def _rows(run_dir):
    with open(os.path.join(run_dir, reporting.METRICS_FILE)) as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def _train(out, *extra):
    return subprocess.Popen([sys.executable, '-m', 'experiments.train', f'--output_dir={out}', *FLAGS, *extra],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    before = live_worker_pids()
    interrupted, reference = tmp_path / 'interrupted', tmp_path / 'reference'
    proc = _train(interrupted)
    metrics = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(interrupted.glob('*/metrics.csv'))
        if found and len(found[0].read_text().splitlines()) >= 1 + 8:
            metrics = found[0]
            break
        time.sleep(0.02)
    assert metrics is not None and proc.poll() is None, 'run finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = metrics.parent
    killed_at = len(_rows(run_dir))
    assert 8 <= killed_at < 30

    resumed = _train(interrupted)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert 'resuming after round' in out
    assert [d.name for d in interrupted.iterdir()] == [run_dir.name]  # same directory
    uninterrupted = _train(reference)
    out_ref, _ = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, out_ref[-3000:]
    (ref_dir,) = reference.iterdir()
    assert _rows(run_dir) == _rows(ref_dir)
    assert len(_rows(run_dir)) == 30
    assert live_worker_pids() - before == set()


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tff_runtime, tmp_path):
    config = ExperimentConfig(output_dir=str(tmp_path), rounds=5, hidden_units=16,
                              client_learning_rate=1e30, num_clients=8, clients_per_round=4)
    with pytest.raises(experiment.DivergenceError,
                       match=r'diverged at round 1: .*last good checkpoint \(round 0\) is kept'):
        experiment.run_experiment(config, log=lambda _: None)
    (run_dir,) = tmp_path.iterdir()
    assert sorted(os.listdir(run_dir / 'checkpoints')) == ['program_state_0']
    assert not (run_dir / reporting.SUMMARY_FILE).exists()


def test_final_model_and_summary_agree(tff_runtime, tmp_path):
    config = ExperimentConfig(output_dir=str(tmp_path), rounds=3, eval_every=3, model='logreg',
                              num_clients=8, clients_per_round=4)
    result = experiment.run_experiment(config, log=lambda _: None)
    model = tf.keras.models.load_model(os.path.join(result.run_dir, reporting.FINAL_MODEL_FILE))
    fed = experiment.load_federated_data(config)
    accuracy = np.mean(np.argmax(model.predict(fed.test_x, verbose=0), -1) == fed.test_y)
    assert accuracy == pytest.approx(result.summary['final_test_accuracy'], abs=1e-9)
    assert os.listdir(os.path.join(result.run_dir, reporting.TENSORBOARD_DIR))
    # Rerunning a finished run resumes it: nothing is trained again, nothing changes.
    again = experiment.run_experiment(config, log=lambda _: None)
    assert again.run_dir == result.run_dir
    assert _rows(again.run_dir) == _rows(result.run_dir)


def test_per_client_accuracy_statistics_match_a_by_hand_computation(tff_runtime, skewed_digits):
    model_fn, keras_fn = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10, seed=1)
    process = build_fedavg(model_fn)
    datasets = [skewed_digits.train.create_tf_dataset_for_client(c).batch(16)
                for c in skewed_digits.train.client_ids]
    weights = process.get_model_weights(process.next(process.initialize(), datasets).state)
    stats = evaluation.PerClientEvaluator(keras_fn, skewed_digits.test)(weights)
    kernel, bias = weights.trainable
    accs = []
    for cid in skewed_digits.test.client_ids:
        batch = next(iter(skewed_digits.test.create_tf_dataset_for_client(cid).batch(10_000)))
        logits = batch['x'].numpy().reshape(len(batch['y']), -1) @ kernel + bias
        accs.append(np.mean(np.argmax(logits, 1) == batch['y'].numpy()))
    assert stats['client_acc_mean'] == pytest.approx(np.mean(accs))
    assert stats['client_acc_p50'] == pytest.approx(np.median(accs))
    assert stats['client_acc_worst10pct'] == pytest.approx(min(accs))  # 6 clients: worst one
    assert stats['client_acc_p10'] <= stats['client_acc_p50'] <= stats['client_acc_p90']
