"""FedRecon through TFF's builder, fed by our dataset computation: against Algorithm 1 of Singhal
et al. 2021 written plainly in eager TF, what never reaches the server, and reconstruction at
evaluation."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.compiler import tree_analysis

from fl_tff.algorithms.fedrecon import build_fedrecon
from fl_tff.data import client_rounds
from fl_tff.personalized_evaluation import PersonalizedEvaluator
from fl_tff.simulation import worker_data
from tests.helpers import float_tensor_shapes, max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05
HEAD_SHAPES = {(32, 10), (10,)}


def _plain_round(keras_fn, x, initial_head, datasets):
    """One round of FedRecon written plainly: each client starts its local layers (the head) at
    their initial values, trains them on its even-numbered batches with the body frozen, then
    the body on its odd-numbered batches with the head frozen (TFF's split of a client's
    batches); the server adds the body deltas' mean weighted by post-reconstruction examples."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    deltas, weights = [], []
    for ds in datasets:
        model = keras_fn()
        model.set_weights(x[:4] + initial_head)
        batches = list(ds)
        n = 0
        for phase, head in ((batches[0::2], True), (batches[1::2], False)):
            for batch in phase:  # Even batches train the head, then odd ones the body.
                with tf.GradientTape() as tape:
                    loss = loss_fn(batch['y'], model(batch['x'], training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                for j, (v, g) in enumerate(zip(model.trainable_variables, grads)):
                    if (j >= 4) == head:
                        v.assign_sub(LR * g)
                n += 0 if head else len(batch['y'])
        deltas.append([v.numpy() - w for v, w in zip(model.trainable_variables[:4], x[:4])])
        weights.append(n)
    w = np.array(weights, np.float64) / sum(weights)
    return [xx + sum(wi * d[i] for wi, d in zip(w, deltas)) for i, xx in enumerate(x[:4])]


def test_three_rounds_on_worker_built_batches_equal_algorithm_1_written_plainly(
        tff_runtime, setup, keras_fn):
    model_fn, select = setup
    process = worker_data.compose(
        build_fedrecon(model_fn, personal_layers=1, client_optimizer=SGD(LR),
                       server_optimizer=SGD(1.0)),
        select.dataset_computation())
    state = process.initialize()
    initial = [np.asarray(t) for t in process.get_model_weights(state).trainable]
    x = list(initial)
    for r in range(1, 4):
        tasks = select(r)
        state = process.next(state, tasks).state
        x = _plain_round(keras_fn, x, initial[4:],
                         [to_batches(select.client_round(t)) for t in tasks]) + initial[4:]
    trained = [np.asarray(t) for t in process.get_model_weights(state).trainable]
    assert max_abs_diff(trained[:4], initial[:4]) > 1e-2
    assert max_abs_diff(trained[:4], x[:4]) <= 1e-5
    assert max_abs_diff(trained[4:], initial[4:]) == 0.0  # Local layers: initial values.


def test_local_layers_never_reach_an_aggregation(tff_runtime, setup):
    model_fn, _ = setup
    tree = build_fedrecon(model_fn, personal_layers=1).next.to_building_block()
    calls = [*tree_analysis.find_unsecure_aggregation_in_tree(tree),
             *tree_analysis.find_secure_aggregation_in_tree(tree)]
    shapes = set().union(*(set(float_tensor_shapes(c.argument.type_signature)) for c in calls))
    assert (64, 32) in shapes and not shapes & HEAD_SHAPES


def test_model_weights_round_trip_keeps_the_initial_local_layers(tff_runtime, setup):
    model_fn, _ = setup
    process = build_fedrecon(model_fn, personal_layers=1)
    state = process.initialize()
    weights = process.get_model_weights(state)
    changed = tff.learning.models.ModelWeights(
        [np.asarray(t) + 1.0 for t in weights.trainable], list(weights.non_trainable))
    back = process.get_model_weights(process.set_model_weights(state, changed))
    assert max_abs_diff(back.trainable[:4], changed.trainable[:4]) == 0.0
    assert max_abs_diff(back.trainable[4:], weights.trainable[4:]) == 0.0
    assert process.uplink_positions == [0, 1, 2, 3]


def test_evaluation_reconstructs_on_the_training_split(tff_runtime, setup, keras_fn,
                                                       skewed_digits):
    """personal_acc_* against reconstruction written plainly: the head from its initial
    values, one epoch of SGD on the training split's batches with the body frozen."""
    model_fn, _ = setup
    process = build_fedrecon(model_fn, personal_layers=1, client_optimizer=SGD(LR))
    weights = process.get_model_weights(process.initialize())
    evaluator = PersonalizedEvaluator(
        keras_fn, model_fn, skewed_digits.train, skewed_digits.test, process=process,
        client_states=None, finetune_epochs=0, batch_size=8, learning_rate=LR, seed=0)
    row = evaluator(weights)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    accuracies = []
    for cid in skewed_digits.test.client_ids:
        model = keras_fn()
        model.set_weights([np.asarray(t) for t in weights.trainable])
        for batch in skewed_digits.train.create_tf_dataset_for_client(cid).batch(8):
            with tf.GradientTape() as tape:
                loss = loss_fn(batch['y'], model(batch['x'], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            for v, g in list(zip(model.trainable_variables, grads))[4:]:
                v.assign_sub(LR * g)
        test = next(iter(skewed_digits.test.create_tf_dataset_for_client(cid).batch(10_000)))
        accuracies.append(float(np.mean(
            np.argmax(model(test['x']).numpy(), -1) == test['y'].numpy())))
    assert row['personal_acc_mean'] == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert row['personal_acc_p10'] == pytest.approx(np.percentile(accuracies, 10), abs=1e-6)


def test_batches_of_a_round_are_its_steps(setup):
    _, select = setup
    rnd = select.client_round(select(1)[0])
    element = next(iter(rnd))
    batches = list(client_rounds.to_batches(rnd))
    assert [len(b['y']) for b in batches] == list(element['step_sizes'].numpy())
    assert np.array_equal(np.concatenate([b['x'] for b in batches]), element['x'].numpy())
