"""Checkpoint/resume (kill -9, Ctrl-C, corrupted checkpoints, extended and moved runs), run
directory locking, divergence, final model, per-client evaluation."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import evaluation, experiment, models
from fl_tff.runs import reporting
from fl_tff.algorithms import build_fedavg
from fl_tff.config import ExperimentConfig
from fl_tff.simulation import TIMING_COLUMNS
from fl_tff.data import client_rounds
from tests.helpers import (REPO_ROOT, live_worker_pids, raise_in_a_weakref_callback,
                           run_driver_in_process)

def _rows(run_dir):
    with open(os.path.join(run_dir, reporting.METRICS_FILE)) as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


SMALL = dict(model='logreg', eval_every=2, checkpoint_every=3, num_clients=8, clients_per_round=4,
             client_epochs=1, client_batch_size=32)


def _config(out, **overrides):
    return ExperimentConfig(output_dir=str(out), **{**SMALL, 'rounds': 9, **overrides})


def _run(config):
    lines = []
    result = experiment.run_experiment(config, log=lines.append)
    return result, lines


def _popen(module, out, *extra, env=None):
    flags = [f'--{k}={v}' for k, v in SMALL.items()]
    return subprocess.Popen([sys.executable, '-m', module, f'--output_dir={out}', *flags, *extra],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**{k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'},
                                 **(env or {})},  # The driver's own log level, as users run it.
                            start_new_session=True)


@pytest.mark.parametrize('extra', [dict(algorithm='ditto', ditto_lambda=0.5,
                                        compression='topk', compression_k=0.1,
                                        error_feedback=True),
                                   dict(algorithm='fedbuff', concurrency=6, buffer_size=3)],
                         ids=['ditto_personal_models_and_error_feedback_residuals',
                              'fedbuff_clients_in_flight'])
def test_kill_9_while_a_checkpoint_is_written_then_rerun_matches_an_uninterrupted_run(
        tff_runtime, tmp_path, extra):
    """The crash point is deterministic: inside the save of round 6's checkpoint. The server
    state must be restored as of round 3 (as for any algorithm), and: with Ditto and error
    feedback the clients' two client-state slots, the personal models, whose accuracy
    (`personal_acc_*`) is in every evaluated row, and the residuals; with FedBuff the start
    weights of the clients in flight at round 3. (Plain FedAvg's resume is the server state
    alone: `test_a_larger_rounds_extends_a_finished_run_past_a_corrupted_newest_checkpoint`.)"""
    before = live_worker_pids()
    crashed = _popen('tests.experiments.crash_driver', tmp_path / 'crashed', '--rounds=8',
                     *[f'--{k}={v}' for k, v in extra.items()],
                     env={'FL_TFF_CRASH_AT': 'checkpoint:6'})
    out, err = crashed.communicate(timeout=300)
    assert crashed.returncode == -signal.SIGKILL, err[-3000:]
    (run_dir,) = (tmp_path / 'crashed').iterdir()
    assert len(_rows(run_dir)) == 6  # Round 6's metrics were released before its checkpoint.
    assert 'program_state_6' not in os.listdir(run_dir / 'checkpoints')
    assert live_worker_pids() - before == set()  # The killed run's worker died with it.

    resumed, lines = _run(_config(tmp_path / 'crashed', rounds=8, **extra))
    assert resumed.run_dir == str(run_dir)
    assert f'resuming after round 3 from {run_dir / "checkpoints"}' in lines
    reference, _ = _run(_config(tmp_path / 'reference', rounds=8, **extra))
    assert _rows(run_dir) == _rows(reference.run_dir) and len(_rows(run_dir)) == 8
    if extra.get('algorithm') == 'ditto':
        assert 'personal_acc_mean' in _rows(run_dir)[-1]
    if extra.get('algorithm') == 'fedbuff':  # Checkpoints keep older models clients train from.
        kept = {}
        for name in os.listdir(run_dir / 'checkpoints'):
            if m := re.fullmatch(r'client_states_(\d+)\.npz', name):
                with np.load(run_dir / 'checkpoints' / name) as saved:
                    kept[int(m[1])] = {int(k.split('::')[0]) for k in saved.files}
        assert kept and all(min(versions) < n for n, versions in kept.items()), kept
    assert not [n for n in os.listdir(run_dir / 'checkpoints') if n.startswith('.partial')]


def test_ctrl_c_is_one_line_exit_130_and_a_concurrent_run_is_refused_naming_the_pid(
        tff_runtime, tmp_path, capsys):
    from experiments import train
    before = live_worker_pids()
    proc = _popen('experiments.train', tmp_path, '--rounds=1000')
    for line in proc.stdout:
        if re.search(r'round +8/1000', line):
            break
    # The same command meanwhile: refused before training, naming the running one.
    code = run_driver_in_process(train.main, [f'--output_dir={tmp_path}', '--rounds=1000',
                                              *[f'--{k}={v}' for k, v in SMALL.items()]])
    err = capsys.readouterr().err
    assert code == 2 and re.fullmatch(f'error: .* is in use by PID {proc.pid} .*--wait_for_lock.*\n', err), err
    os.killpg(proc.pid, signal.SIGINT)  # What a terminal's Ctrl-C sends: the process group.
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    match = re.fullmatch(r'interrupted after round (\d+); rerun the same command to resume from '
                         r'round (\d+)\n', err)
    assert match, err[-3000:]
    (run_dir,) = tmp_path.iterdir()
    last, resume = int(match[1]), int(match[2])
    assert last >= 8 and len(_rows(run_dir)) == last
    checkpoints = sorted(int(n.rsplit('_', 1)[1]) for n in os.listdir(run_dir / 'checkpoints')
                         if n.startswith('program_state_'))
    assert resume == checkpoints[-1] + 1 and resume > last - 3
    assert live_worker_pids() - before == set()


def test_ctrl_c_that_python_dropped_in_a_weakref_callback_still_stops_after_that_round(
        tff_runtime, tmp_path, capsys):
    hook = sys.unraisablehook
    def on_round(row):
        if row['round'] == 4:
            raise_in_a_weakref_callback(KeyboardInterrupt)  # What CI hit.
    with pytest.raises(experiment.RunInterrupted) as raised:
        experiment.run_experiment(_config(tmp_path), log=lambda line: None, on_round=on_round)
    assert str(raised.value) == ('interrupted after round 4; rerun the same command to resume '
                                 'from round 4')
    (run_dir,) = tmp_path.iterdir()
    assert [int(r['round']) for r in _rows(run_dir)] == [1, 2, 3, 4]
    assert 'Exception ignored' not in capsys.readouterr().err  # Remembered, not printed.
    assert sys.unraisablehook is hook  # Outside a run, whatever hook was there is back.


def test_a_larger_rounds_extends_a_finished_run_past_a_corrupted_newest_checkpoint(
        tff_runtime, tmp_path):
    first, _ = _run(_config(tmp_path, rounds=6))
    newest = os.path.join(first.run_dir, 'checkpoints', 'program_state_6', 'variables')
    (data,) = [f for f in os.listdir(newest) if f.startswith('variables.data')]
    with open(os.path.join(newest, data), 'r+b') as f:
        f.truncate(10)  # What a crash without atomic writes left behind.
    extended, lines = _run(_config(tmp_path, rounds=9))
    assert extended.run_dir == first.run_dir
    assert lines[0] == f'run directory: {first.run_dir}'
    assert any(l.startswith('skipped the checkpoint of round 6, which does not load (IndexError')
               for l in lines), lines
    assert f'resuming after round 3 from {first.run_dir}/checkpoints' in lines
    reference, _ = _run(_config(tmp_path / 'reference', rounds=9))
    assert _rows(extended.run_dir) == _rows(reference.run_dir)


def test_settings_that_do_not_change_the_computation_resume_after_the_directory_moved(
        tff_runtime, tmp_path):
    first, _ = _run(_config(tmp_path / 'a', rounds=4))
    os.rename(tmp_path / 'a', tmp_path / 'b')
    moved = os.path.join(tmp_path, 'b', os.path.basename(first.run_dir))
    again, lines = _run(_config(tmp_path / 'b', rounds=6, eval_every=1, checkpoint_every=2,
                                divergence_factor=0.0, wait_for_lock=True))
    assert again.run_dir == moved and f'resuming after round 4 from {moved}/checkpoints' in lines
    assert [r['round'] for r in _rows(moved)] == ['1', '2', '3', '4', '5', '6']
    assert json.load(open(os.path.join(moved, reporting.CONFIG_FILE)))['eval_every'] == 1


def test_settings_that_change_the_computation_start_a_new_directory_and_say_why(
        tff_runtime, tmp_path):
    first, _ = _run(_config(tmp_path, rounds=2))
    other, lines = _run(_config(tmp_path, rounds=2, client_learning_rate=0.1))
    assert other.run_dir == first.run_dir + '_2'
    assert lines[0] == (f'new run directory {other.run_dir}: {first.run_dir} has other settings: '
                        '--client_learning_rate=0.05 there, 0.1 here')
    again, lines = _run(_config(tmp_path, rounds=2, client_learning_rate=0.1))
    assert again.run_dir == other.run_dir and lines[0] == f'run directory: {other.run_dir}'
    shorter, lines = _run(_config(tmp_path, rounds=1))  # Cannot un-run round 2.
    assert shorter.run_dir == first.run_dir + '_3'
    assert lines[0].endswith(f'{first.run_dir} has already run 2 rounds, more than --rounds=1')


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tff_runtime, tmp_path):
    config = ExperimentConfig(output_dir=str(tmp_path), rounds=5, hidden_units=16,
                              client_learning_rate=1e30, num_clients=8, clients_per_round=4)
    with pytest.raises(experiment.DivergenceError,
                       match=r'diverged at round 1: .*last good checkpoint \(round 0\) is kept'):
        experiment.run_experiment(config, log=lambda _: None)
    (run_dir,) = tmp_path.iterdir()
    assert sorted(os.listdir(run_dir / 'checkpoints')) == ['program_state_0']
    assert not (run_dir / reporting.SUMMARY_FILE).exists()


def test_a_finite_but_exploding_loss_exits_3_keeping_the_last_good_checkpoint(
        tff_runtime, tmp_path, capsys):
    """The issue's case: --client_learning_rate=50 gives a round-1 train loss of ~1e29."""
    from experiments import train
    code = run_driver_in_process(train.main, [f'--output_dir={tmp_path}', '--rounds=5',
                                              '--client_learning_rate=50'])
    err = capsys.readouterr().err
    assert code == 3, err
    assert re.fullmatch(r'error: training diverged at round 1: train_loss \S+ exceeds '
                        r'--divergence_factor=10 x the initial loss \S+ .*last good checkpoint '
                        r'\(round 0\) is kept in \S+\n', err), err
    (run_dir,) = tmp_path.iterdir()
    assert sorted(os.listdir(run_dir / 'checkpoints')) == ['program_state_0']


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
    datasets = [client_rounds.from_batches(skewed_digits.train.create_tf_dataset_for_client(c).batch(16))
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
