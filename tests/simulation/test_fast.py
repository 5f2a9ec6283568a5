"""The fast simulation path runs the same computations as the TFF process: same batches, same
weights after several rounds (FedAvg and FedProx, example weighting, stragglers' partial
batches), and with XLA the same learning."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import experiment
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.data import preprocessing
from fl_tff.simulation import fast

BASE = ExperimentConfig(dataset='digits', model='2nn', hidden_units=32, num_clients=12,
                        clients_per_round=6, client_epochs=2, client_batch_size=16, rounds=3,
                        eval_every=3, seed=3, client_weighting='examples_processed')


def test_whole_client_batches_split_into_the_tff_paths_batches():
    data = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.arange(23 * 3, dtype=np.float32).reshape(23, 3), y=np.arange(23, dtype=np.int32)))
    kwargs = dict(epochs=2, batch_size=10, shuffle_seed=5)
    expected = list(preprocessing.preprocess_client_dataset(data, **kwargs).as_numpy_iterator())
    (stacked, steps), rest = fast._split_whole(
        preprocessing.preprocess_client_dataset(data, whole=True, **kwargs), 10)
    assert steps == 4 and stacked['x'].shape == (4, 10, 3) and len(rest) == 1
    got = [tf.nest.map_structure(lambda t: t[i], stacked) for i in range(steps)] + rest
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a['x'], b['x'])
        np.testing.assert_array_equal(a['y'], b['y'])


def _weights(config, tmp_path, name):
    config = dataclasses.replace(config, output_dir=str(tmp_path), experiment_name=name)
    result = experiment.run_experiment(config, log=lambda _: None)
    return np.concatenate([np.ravel(t) for t in result.final_weights.trainable]), result


@pytest.mark.parametrize('overrides', [
    dict(),
    dict(algorithm='fedprox', mu=0.5, client_weighting='uniform', straggler_fraction=0.5,
         straggler_policy='partial', server_optimizer='adam', server_learning_rate=0.01),
])
def test_fast_path_gives_the_tff_paths_weights(tff_runtime, tmp_path, overrides):
    config = dataclasses.replace(BASE, **overrides)
    tff_weights, tff_run = _weights(config, tmp_path, 'tff')
    fast_weights, fast_run = _weights(dataclasses.replace(config, simulation='fast'), tmp_path, 'fast')
    assert np.abs(fast_weights - tff_weights).max() <= 1e-5
    for key in ('train_loss', 'train_examples', 'test_accuracy'):
        assert fast_run.history[-1][key] == pytest.approx(tff_run.history[-1][key], abs=1e-5)


def test_xla_path_learns_the_same(tff_runtime, tmp_path):
    """XLA rounds differently: smooth models stay within float noise, ReLU nets learn equally."""
    logreg = dataclasses.replace(BASE, model='logreg', hidden_units=0)
    tff_weights, _ = _weights(logreg, tmp_path, 'logreg_tff')
    xla_weights, _ = _weights(dataclasses.replace(logreg, simulation='fast_xla'), tmp_path, 'logreg_xla')
    assert np.abs(xla_weights - tff_weights).max() <= 1e-5
    longer = dataclasses.replace(BASE, rounds=8, eval_every=8)
    _, tff_run = _weights(longer, tmp_path, 'mlp_tff')
    _, xla_run = _weights(dataclasses.replace(longer, simulation='fast_xla'), tmp_path, 'mlp_xla')
    assert tff_run.summary['final_test_accuracy'] > 0.6  # Learning, so the comparison means something.
    assert xla_run.summary['final_test_accuracy'] == pytest.approx(
        tff_run.summary['final_test_accuracy'], abs=0.02)


@pytest.mark.parametrize('overrides,flag', [
    (dict(algorithm='fedsgd'), 'algorithm'),
    (dict(dp='fixed', client_weighting='uniform'), 'dp'),
    (dict(secure_agg=True), 'secure_agg'),
    (dict(compression='quantize'), 'compression'),
    (dict(aggregator='median'), 'aggregator'),
    (dict(client_weighting='examples'), 'client_weighting'),
])
def test_features_the_fast_path_lacks_name_the_flag(overrides, flag):
    with pytest.raises(ConfigError, match=f'--{flag}: --simulation=fast: --{flag}(=\S+)? needs TFF\'s runtime'):
        dataclasses.replace(BASE, simulation='fast', **overrides).validate()


def test_a_round_without_examples_is_skipped_as_on_the_tff_path(tff_runtime):
    """Example weights summing to 0 make TFF's mean 0/0 = NaN and the server skips the update;
    the fast path must do the same (not apply a zero update that moves momentum)."""
    config = dataclasses.replace(BASE, simulation='fast', server_optimizer='sgdm',
                                 server_momentum=0.9)
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    process = experiment.build_process(config, model_fn)
    empty = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.zeros((0, 64), np.float32), y=np.zeros((0,), np.int32))).batch(10_000)
    state = process.initialize()
    output = process.next(state, [empty, empty])
    try:
        assert output.metrics['finalizer']['update_non_finite'] == 1
        for a, b in zip(process.get_model_weights(output.state).trainable,
                        process.get_model_weights(state).trainable):
            np.testing.assert_array_equal(a, b)
    finally:
        process.close()


@pytest.mark.parametrize('overrides,why', [
    (dict(aggregator='median'), 'its aggregator .CoordinateWiseFactory. is not the plain mean'),
    (dict(secure_agg=True), 'its aggregator .* is not the plain mean'),
    (dict(compression='quantize'), 'its aggregator .* is not the plain mean'),
    (dict(dp='fixed', client_weighting='uniform'), 'its aggregator .* is not the plain mean'),
    (dict(dp='dpsgd'), 'its clients run DP-SGD'),
    (dict(compression='topk', error_feedback=True), 'its clients keep error-feedback residuals'),
    (dict(algorithm='fedsgd'), 'it was not built by build_local_sgd_algorithm'),
    (dict(client_weighting='examples'), 'its clients weigh by examples, read from their datasets'),
])
def test_the_fast_path_refuses_a_process_it_cannot_replay_exactly(tff_runtime, overrides, why):
    """The library-level guard (the config refuses these first, naming the flag): a process's
    builder declares what it computes, and the fast path replays only that."""
    config = dataclasses.replace(BASE, **overrides)
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    process = experiment.build_process(config, model_fn, fed.masked_labels, max_weight=1000.0)
    with pytest.raises(ValueError, match=f'the fast path cannot replay this process exactly: {why}'):
        fast.FastProcess(process, model_fn)


def test_whole_client_batches_are_refused_by_tffs_runtime(tff_runtime):
    from fl_tff import simulation
    fed = experiment.load_federated_data(BASE)
    model_fn, _ = experiment.build_model(BASE, fed)
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=2, epochs=1, batch_size=16, seed=0, whole_client_batches=True)
    assert all(isinstance(d, simulation.WholeClientData) and d.batch_size == 16 for d in select(1))
    with pytest.raises(TypeError, match='whole-client batches .* are for the fast path'):
        simulation.run_training(experiment.build_process(BASE, model_fn), select, rounds=1)
