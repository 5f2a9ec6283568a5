"""Personalized evaluation against per-client accuracies computed by hand: personal models from
the client-state store, and fine-tuning written as a plain SGD loop over the same batches."""

import zlib

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import client_state, evaluation, models
from fl_tff.algorithms.fedper import build_fedper
from fl_tff.data import client_rounds
from fl_tff.personalized_evaluation import PersonalizedEvaluator
from tests.helpers import to_batches

LR, BATCH, SEED = 0.1, 16, 5


@pytest.fixture(scope='module')
def model(skewed_digits):
    return models.model_fn_for_dataset('2nn', skewed_digits.element_spec, 10, seed=4,
                                       hidden_units=32)


def _arrays(client_data, cid):
    batch = next(iter(client_data.create_tf_dataset_for_client(cid).batch(10_000)))
    return batch['x'].numpy(), batch['y'].numpy()


def _accuracy(keras_fn, weights, x, y) -> float:
    net = keras_fn()
    net.set_weights(weights)
    return float(np.mean(np.argmax(net(x).numpy(), -1) == y))


def test_personal_and_finetuned_accuracies_match_a_by_hand_computation(tff_runtime, skewed_digits,
                                                                        model):
    model_fn, keras_fn = model
    process = build_fedper(model_fn, personal_layers=1)
    weights = process.get_model_weights(process.initialize())
    store = client_state.ClientStateStore(process.initial_client_state())
    rng = np.random.default_rng(0)
    ids = list(skewed_digits.test.client_ids)
    heads = {cid: [rng.normal(size=t.shape).astype(np.float32)
                   for t in process.initial_client_state()] for cid in ids[:3]}
    store.update(list(heads), list(heads.values()))  # The others never trained.
    evaluator = PersonalizedEvaluator(
        keras_fn, model_fn, skewed_digits.train, skewed_digits.test, process=process,
        client_states=store, finetune_epochs=2, batch_size=BATCH, learning_rate=LR, seed=SEED,
        # Held-out clients are fine-tuned the same way: here the same clients, same numbers.
        heldout_train=skewed_digits.train, heldout_test=skewed_digits.test)
    row = evaluator(weights)
    store.close()

    trainable = [np.asarray(t) for t in weights.trainable]
    personal, tuned = [], []
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for cid in ids:
        x, y = _arrays(skewed_digits.test, cid)
        head = heads.get(cid, trainable[4:])
        personal.append(_accuracy(keras_fn, trainable[:4] + head, x, y))
        net = keras_fn()
        net.set_weights(trainable)
        batches = to_batches(client_rounds.make_round(
            skewed_digits.train.create_tf_dataset_for_client(cid), epochs=2, batch_size=BATCH,
            shuffle_seed=zlib.crc32(f'{SEED}:{cid}'.encode())))
        for batch in batches:
            with tf.GradientTape() as tape:
                loss = loss_fn(batch['y'], net(batch['x'], training=True))
            for v, g in zip(net.trainable_variables, tape.gradient(loss, net.trainable_variables)):
                v.assign_sub(LR * g)
        tuned.append(_accuracy(keras_fn, [v.numpy() for v in net.trainable_variables], x, y))
    for prefix, accuracies in (('personal_acc', personal), ('finetuned_acc', tuned)):
        expected = evaluation.distribution(prefix, accuracies)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-6), key
    assert row['finetuned_acc_mean'] > _mean_global(keras_fn, trainable, skewed_digits) + 0.1
    for stat in ('mean', 'p10', 'p50', 'p90', 'worst10pct'):
        assert row[f'heldout_finetuned_acc_{stat}'] == row[f'finetuned_acc_{stat}']
    assert row['heldout_test_acc_mean'] == pytest.approx(
        _mean_global(keras_fn, trainable, skewed_digits), abs=1e-6)


def _mean_global(keras_fn, trainable, fed):
    return np.mean([_accuracy(keras_fn, trainable, *_arrays(fed.test, c))
                    for c in fed.test.client_ids])


def test_distribution_summarizes_like_numpy():
    acc = [0.1, 0.5, 0.9, 1.0, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 0.95]
    row = evaluation.distribution('x', acc)
    assert row['x_mean'] == pytest.approx(np.mean(acc))
    assert row['x_p10'] == pytest.approx(np.percentile(acc, 10))
    assert row['x_worst10pct'] == pytest.approx(np.mean([0.1, 0.2]))  # ceil(1.1) = 2 clients


def test_nothing_to_report_without_personal_models_or_finetuning(skewed_digits, model):
    model_fn, keras_fn = model
    evaluator = PersonalizedEvaluator(
        keras_fn, model_fn, skewed_digits.train, skewed_digits.test, process=object(),
        client_states=None, finetune_epochs=0, batch_size=BATCH, learning_rate=LR, seed=SEED)
    assert not evaluator.active
