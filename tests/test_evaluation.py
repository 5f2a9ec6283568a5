"""Centralized and federated evaluation agree with each other and with a by-hand computation."""

import numpy as np
import pytest

from fl_tff import evaluation, models
from fl_tff.algorithms import build_fedavg
from fl_tff.data import client_rounds


def test_centralized_equals_federated_and_by_hand_logistic_regression(tff_runtime, skewed_digits):
    model_fn, keras_fn = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10, seed=2)
    process = build_fedavg(model_fn)
    datasets = [client_rounds.from_batches(skewed_digits.train.create_tf_dataset_for_client(c).batch(8))
                for c in skewed_digits.train.client_ids]
    state = process.next(process.initialize(), datasets).state
    weights = process.get_model_weights(state)

    central = evaluation.CentralizedEvaluator(keras_fn, skewed_digits.test_x, skewed_digits.test_y)(weights)
    federated = evaluation.FederatedEvaluator(model_fn, skewed_digits.test)(weights)

    kernel, bias = weights.trainable
    logits = skewed_digits.test_x.reshape(len(skewed_digits.test_x), -1) @ kernel + bias
    by_hand = np.mean(np.argmax(logits, axis=1) == skewed_digits.test_y)
    assert 0.3 < central['test_accuracy'] < 1.0
    assert central['test_accuracy'] == pytest.approx(by_hand, abs=1e-9)
    # The centralized test set is the union of the clients' test sets.
    assert federated['fed_eval_accuracy'] == pytest.approx(central['test_accuracy'], abs=1e-6)
    assert federated['fed_eval_loss'] == pytest.approx(central['test_loss'], rel=1e-4)
    assert federated['fed_eval_clients'] == len(skewed_digits.test.client_ids)


def test_evaluators_given_one_global_model_share_it_and_a_plain_factory_builds_each_call(
        skewed_digits):
    """A run's evaluators share one Keras model per weights evaluated (`GlobalKerasModel`); an
    evaluator given a plain factory cannot know whether TFF built graphs since its last call
    (which invalidates an eager Keras model), so it builds a model per call."""
    import tensorflow_federated as tff
    _, keras_fn = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10, seed=2)
    built = []

    def counting():
        built.append(keras_fn())
        return built[-1]

    weights = tff.learning.models.ModelWeights.from_model(keras_fn())
    x, y = skewed_digits.test_x, skewed_digits.test_y
    shared = evaluation.GlobalKerasModel(counting)
    first = evaluation.CentralizedEvaluator(shared, x, y)(weights)
    again = evaluation.CentralizedEvaluator(shared, x, y, prefix='again')(weights)
    assert len(built) == 1 and first['test_accuracy'] == again['again_accuracy']
    alone = evaluation.CentralizedEvaluator(counting, x, y)
    alone(weights)
    alone(weights)
    assert len(built) == 3
