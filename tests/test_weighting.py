"""Client weighting: what a client's weight counts (n_k, examples processed, 1, tokens), checked
against counts made by hand and a weighted mean computed plainly from single-client rounds."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import models, weighting
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.client_work import build_local_training_fn
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.data import client_rounds
from tests.helpers import max_abs_diff

N_K, EPOCHS_RUN, BATCH = 37, 2, 8
SGD = tff.learning.optimizers.build_sgdm
EXAMPLES = weighting.ClientWeighting(weighting.Counts.EXAMPLES)
PROCESSED = weighting.ClientWeighting(weighting.Counts.EXAMPLES_PROCESSED)


def _client_data(n, seed, epochs):
    """A client's round: n examples of 64 features, `epochs` passes reshuffled each pass (a
    straggler's partial work when fewer than E)."""
    rng = np.random.default_rng(seed)
    ds = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=rng.normal(size=(n, 64)).astype(np.float32),
        y=rng.integers(0, 10, size=n).astype(np.int32)))
    return client_rounds.make_round(ds, epochs=epochs, batch_size=BATCH, shuffle_seed=seed)


@pytest.fixture(scope='module')
def model_fn():
    spec = collections.OrderedDict(x=tf.TensorSpec([None, 64], tf.float32),
                                   y=tf.TensorSpec([None], tf.int32))
    keras_fn = models.keras_model_factory('logreg', (64,), 10, seed=1)
    return models.build_model_fn(keras_fn, spec)


def _initial(model_fn):
    return tff.learning.models.ModelWeights.from_model(model_fn())


@pytest.mark.parametrize('weighting_,expected', [
    (EXAMPLES, N_K),
    (PROCESSED, N_K * EPOCHS_RUN),
    (weighting.ClientWeighting(weighting.Counts.UNIFORM), 1),
    (tff.learning.ClientWeighting.NUM_EXAMPLES, N_K * EPOCHS_RUN),  # TFF's name.
])
def test_each_weighting_counts_what_it_says(model_fn, weighting_, expected):
    train = build_local_training_fn(model_fn, SGD(0.1), weighting_)
    result, _ = train(_initial(model_fn), _client_data(N_K, 0, EPOCHS_RUN))
    assert float(result.update_weight) == expected


def test_max_weight_is_the_largest_weight_each_weighting_can_give(model_fn):
    """The secure weighted mean divides by it: an E-times looser bound under n_k would cost
    E-times coarser quantization."""
    assert weighting.max_weight(EXAMPLES, N_K, 3) == N_K
    assert weighting.max_weight(PROCESSED, N_K, 3) == 3 * N_K
    assert weighting.max_weight(weighting.ClientWeighting(weighting.Counts.UNIFORM), N_K, 3) == 1.0
    assert weighting.max_weight(weighting.ClientWeighting(weighting.Counts.TOKENS), N_K, 3,
                                labels_per_example=4) == 3 * N_K * 4
    for w in (EXAMPLES, PROCESSED):  # The largest client, all epochs run, reaches the bound.
        result, _ = build_local_training_fn(model_fn, SGD(0.1), w)(
            _initial(model_fn), _client_data(N_K, 0, 3))
        assert float(result.update_weight) == weighting.max_weight(w, N_K, 3)


def test_tokens_count_the_non_padding_labels_processed(model_fn):
    labels = np.array([[3, 5, 0, 0], [7, 0, 0, 0], [1, 2, 4, 0]], np.int64)  # 0 is padding.
    ds = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.zeros((3, 4), np.float32), y=labels)).repeat(2).batch(2)
    tokens = weighting.ClientWeighting(weighting.Counts.TOKENS, padding_labels=(0,))
    element = next(iter(client_rounds.from_batches(ds)))
    weight = tf.function(lambda e: weighting.client_weight(tokens, e, tf.constant(6, tf.int64)))(element)
    assert float(weight) == 2 * np.count_nonzero(labels)
    # Without padding every label position counts: the bound n_k x E x positions is reached.
    full = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.zeros((3, 4), np.float32), y=labels + 10)).repeat(2).batch(2)
    weight = tf.function(lambda e: weighting.client_weight(tokens, e, tf.constant(6, tf.int64)))(
        next(iter(client_rounds.from_batches(full))))
    assert float(weight) == weighting.max_weight(tokens, 3, 2, labels_per_example=4) == 24


def test_the_weighting_changes_the_weight_only_never_the_update(model_fn):
    by_examples = build_local_training_fn(model_fn, SGD(0.1), EXAMPLES)
    by_processed = build_local_training_fn(model_fn, SGD(0.1), PROCESSED)
    for seed in range(5):
        a, _ = by_examples(_initial(model_fn), _client_data(N_K, seed, 3))
        b, _ = by_processed(_initial(model_fn), _client_data(N_K, seed, 3))
        assert max_abs_diff(a.update, b.update) == 0.0


def test_fedavg_weighs_a_partial_straggler_by_n_k(tff_runtime, model_fn):
    """One round, two clients (the second did 1 of 3 epochs): the new model is the n_k-weighted
    mean of the two single-client updates under `examples`, and the examples-processed mean
    (TFF's builders) under `examples_processed`."""
    sizes, epochs = (20, 44), (3, 1)
    initial = None
    results = {}
    for name, w in (('examples', EXAMPLES), ('processed', PROCESSED)):
        process = build_fedavg(model_fn, client_optimizer=SGD(0.1), weighting=w)
        state = process.initialize()
        initial = process.get_model_weights(state).trainable
        data = [_client_data(n, i, e) for i, (n, e) in enumerate(zip(sizes, epochs))]
        alone = [process.get_model_weights(process.next(state, [d]).state).trainable for d in data]
        both = process.get_model_weights(process.next(state, data).state).trainable
        results[name] = (alone, both)

    for name, weights in (('examples', sizes), ('processed', [n * e for n, e in zip(sizes, epochs)])):
        alone, both = results[name]
        expected = [x0 + sum(w * (a[i] - x0) for w, a in zip(weights, alone)) / sum(weights)
                    for i, x0 in enumerate(initial)]
        assert max_abs_diff(both, expected) <= 1e-6
    assert max_abs_diff(results['examples'][1], results['processed'][1]) > 1e-4


@pytest.mark.parametrize('overrides,message', [
    (dict(client_weighting='tokens'), '--client_weighting=tokens counts the non-padding tokens .*'
                                      'choose --dataset=shakespeare or --dataset=stackoverflow_nwp'),
])
def test_weightings_are_refused_where_they_mean_nothing(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**overrides).validate()


def test_the_default_is_n_k_as_in_the_papers():
    assert ExperimentConfig().client_weighting == 'examples'
    assert weighting.CLIENT_WEIGHTINGS.get('examples').build(padding_labels=()) == EXAMPLES
