"""Error feedback for top-k / rand-k: nothing is lost (sent + residual = update + old residual),
k = 1 is plain FedAvg, residuals live across rounds and checkpoints, and it rescues top-k."""

import dataclasses
import glob
import os
import shutil
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import experiment
from fl_tff.communication.error_feedback import ErrorFeedback, compensate_and_compress
from fl_tff.config import ConfigError, ExperimentConfig

BASE = ExperimentConfig(hidden_units=32, num_clients=10, clients_per_round=5, client_epochs=1,
                        rounds=3, eval_every=3, seed=4)


@pytest.mark.parametrize('name', ['topk', 'randk'])
def test_sent_plus_new_residual_is_update_plus_old_residual(name):
    update = {'w': tf.constant(np.random.default_rng(0).normal(size=(20, 5)), tf.float32)}
    residual = {'w': tf.constant(np.random.default_rng(1).normal(size=(20, 5)), tf.float32)}
    sent, new = compensate_and_compress(ErrorFeedback(name, 0.1), update, residual,
                                        tf.constant([3, 4], tf.int64))
    assert np.count_nonzero(sent['w'].numpy()) == 10
    np.testing.assert_allclose(sent['w'] + new['w'], update['w'] + residual['w'], atol=1e-5)
    if name == 'topk':  # The largest corrected values are sent unchanged.
        corrected = np.abs((update['w'] + residual['w']).numpy()).ravel()
        assert np.sort(np.abs(sent['w'].numpy()).ravel())[-10:] == pytest.approx(np.sort(corrected)[-10:])


def _run(tmp_path, name, **overrides):
    config = dataclasses.replace(BASE, output_dir=str(tmp_path), experiment_name=name, **overrides)
    return experiment.run_experiment(config, log=lambda _: None)


def _flat(weights):
    return np.concatenate([np.ravel(t) for t in weights.trainable])


def test_keeping_everything_is_plain_fedavg(tff_runtime, tmp_path):
    plain = _run(tmp_path, 'plain')
    kept = _run(tmp_path, 'ef', compression='topk', compression_k=1.0, error_feedback=True)
    np.testing.assert_allclose(_flat(kept.final_weights), _flat(plain.final_weights), atol=1e-6)
    # Counted from the tensors (2NN of width 32 on 8x8 digits): float32 values plus the 32-bit
    # weight; top-k adds each kept value's index, ceil(log2 n) bits in a tensor of n values.
    sizes = [64 * 32, 32, 32 * 32, 32, 32 * 10, 10]
    index_bits = [11, 5, 10, 5, 9, 4]
    assert plain.history[-1]['uplink_bytes_per_client'] == (32 * sum(sizes) + 32) // 8 == 13868
    assert kept.history[-1]['uplink_bytes_per_client'] == -(
        -(32 + sum(n * (32 + b) for n, b in zip(sizes, index_bits))) // 8) == 18369


def test_with_mime_lite_keeping_everything_is_plain_mime_lite(tff_runtime, tmp_path):
    """MIME-lite's delta goes through error feedback (a residual slot) while its full-batch
    gradient rides beside it as the side upload: keeping everything trains plain MIME-lite."""
    mime = dict(algorithm='mimelite', client_learning_rate=0.005)
    plain = _run(tmp_path, 'mime_plain', **mime)
    kept = _run(tmp_path, 'mime_ef', compression='topk', compression_k=1.0, error_feedback=True,
                **mime)
    np.testing.assert_allclose(_flat(kept.final_weights), _flat(plain.final_weights), atol=1e-6)
    assert kept.history[-1]['train_loss'] == pytest.approx(plain.history[-1]['train_loss'],
                                                           rel=1e-5)


def test_residuals_are_checkpointed_and_a_resume_matches_an_uninterrupted_run(tff_runtime, tmp_path):
    settings = dict(compression='topk', compression_k=0.05, error_feedback=True, rounds=4,
                    eval_every=4, checkpoint_every=2)
    reference = _run(tmp_path, 'reference', **settings)
    _run(tmp_path, 'resumed', **settings)
    checkpoints = os.path.join(tmp_path, 'resumed', 'checkpoints')
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(checkpoints, '*.npz'))) == [
        'client_states_0.npz', 'client_states_2.npz', 'client_states_4.npz']
    with np.load(os.path.join(checkpoints, 'client_states_2.npz')) as saved:
        assert saved.files and all(np.any(saved[k]) for k in saved.files if k.endswith('::0'))
    # Lose the last checkpoint: the rerun resumes after round 2 with round 2's residuals.
    for path in glob.glob(os.path.join(checkpoints, '*4*')):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    resumed = _run(tmp_path, 'resumed', **settings)
    np.testing.assert_allclose(_flat(resumed.final_weights), _flat(reference.final_weights), atol=1e-6)
    # Without the residuals the resume would differ: it refuses instead.
    for path in glob.glob(os.path.join(checkpoints, '*4*')):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.remove(os.path.join(checkpoints, 'client_states_2.npz'))
    with pytest.raises(FileNotFoundError, match='client_states_2.npz is missing'):
        _run(tmp_path, 'resumed', **settings)


def test_with_scaffold_two_slots_are_checkpointed_resumed_and_billed(tff_runtime, tmp_path):
    """SCAFFOLD with top-k and error feedback from the driver: c_i and e_i are two slots of one
    checkpoint, a resume from round 1 matches the uninterrupted run, and each upload is billed
    as the top-k model delta plus dc_i in float32."""
    settings = dict(algorithm='scaffold', client_weighting='uniform', compression='topk',
                    compression_k=0.05, error_feedback=True, rounds=2, eval_every=2,
                    checkpoint_every=1)
    reference = _run(tmp_path, 'reference', **settings)
    checkpoints = os.path.join(tmp_path, 'reference', 'checkpoints')
    with zipfile.ZipFile(os.path.join(checkpoints, 'client_states_1.npz')) as archive:
        assert sorted(archive.namelist()) == ['control_variate.npz', 'residual.npz']
    _run(tmp_path, 'resumed', **settings)
    checkpoints = os.path.join(tmp_path, 'resumed', 'checkpoints')
    for path in glob.glob(os.path.join(checkpoints, '*2*')):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    resumed = _run(tmp_path, 'resumed', **settings)
    np.testing.assert_array_equal(_flat(resumed.final_weights), _flat(reference.final_weights))
    # Uniform weights send no weight; top-k: ceil(0.05 n) values of 32 bits plus their
    # ceil(log2 n)-bit indices per tensor; dc_i: every value as float32.
    sizes = [64 * 32, 32, 32 * 32, 32, 32 * 10, 10]
    index_bits = [11, 5, 10, 5, 9, 4]
    top_k_bits = sum(-(-n * 5 // 100) * (32 + b) for n, b in zip(sizes, index_bits))
    assert reference.history[-1]['uplink_bytes_per_client'] == -(-top_k_bits // 8) + 4 * sum(sizes)


def test_error_feedback_rescues_aggressive_top_k(tff_runtime, tmp_path):
    """Top-1% drops 99% of every update; with feedback the dropped mass arrives later."""
    settings = dict(compression='topk', compression_k=0.01, rounds=12, eval_every=12,
                    num_clients=10, clients_per_round=10, client_weighting='uniform')
    without = _run(tmp_path, 'without', **settings).summary['final_test_accuracy']
    with_ef = _run(tmp_path, 'with', error_feedback=True, **settings).summary['final_test_accuracy']
    print(f"top-1%: {without:.3f} without feedback, {with_ef:.3f} with")
    assert with_ef > without + 0.1, (with_ef, without)


@pytest.mark.parametrize('overrides,message', [
    (dict(error_feedback=True), r'--compression: --error_feedback keeps what a sparsifier dropped for the next round \(--compression=none does not\): choose --compression=topk or --compression=randk'),
    (dict(error_feedback=True, compression='quantize'), r'--compression: --error_feedback .*\(--compression=quantize does not\)'),
])
def test_error_feedback_needs_a_sparsifier(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, **overrides).validate()


@pytest.mark.parametrize('name', ['topk', 'randk'])
def test_the_residual_shrinks_when_nothing_new_arrives(name):
    """Error feedback needs a contraction: resending an old residual must not grow it (rand-k
    rescaled by n/k would multiply it by about n/k - 1 = 9 here)."""
    residual = {'w': tf.constant(np.random.default_rng(2).normal(size=(50,)), tf.float32)}
    zero = {'w': tf.zeros([50])}
    norms = [float(tf.norm(residual['w']))]
    for step in range(5):
        _, residual = compensate_and_compress(ErrorFeedback(name, 0.1), zero, residual,
                                              tf.constant([step, 1], tf.int64))
        norms.append(float(tf.norm(residual['w'])))
    assert all(b < a for a, b in zip(norms, norms[1:])), norms


def test_a_client_of_weight_zero_sends_nothing_and_keeps_its_residual():
    update = {'w': tf.constant([0.0, 0.0, 0.0])}
    residual = {'w': tf.constant([1.0, -2.0, 3.0])}
    sent, kept = compensate_and_compress(ErrorFeedback('topk', 0.34), update, residual,
                                         tf.constant([0, 0], tf.int64), tf.constant(0.0))
    np.testing.assert_array_equal(sent['w'], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(kept['w'], residual['w'])
