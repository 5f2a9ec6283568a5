"""`--client_optimizer_state=keep`: each client's optimizer continues from the state it ended its
last round in, against local SGD with momentum written plainly in TF (TFF's SGDM: a <- m a + g,
w <- w - lr a), the accumulators kept per client."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.algorithms import build_fedavg
from fl_tff.config import ConfigError, ExperimentConfig
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import max_abs_diff, plan_rounds, run_with_client_states, to_batches

LR, MOMENTUM = 0.05, 0.9


def _reference_round(keras_fn, x, accumulators, ids, datasets):
    """One FedAvg round, uniform weights, server SGD at 1: each client starts from x with its
    accumulator from its last round (zeros at first), takes SGDM steps and keeps the
    accumulator; x moves by the mean of y - x."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras_fn()

    @tf.function(reduce_retracing=True)
    def step(inputs, labels, acc):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        new_acc = [MOMENTUM * a + g for a, g in zip(acc, grads)]
        for v, a in zip(model.trainable_variables, new_acc):
            v.assign_sub(LR * a)
        return new_acc

    deltas = []
    for cid, ds in zip(ids, datasets):
        model.set_weights(x)
        acc = [tf.constant(a) for a in accumulators.get(cid, [np.zeros_like(w) for w in x])]
        for batch in ds:
            acc = step(batch['x'], batch['y'], acc)
        accumulators[cid] = [a.numpy() for a in acc]
        deltas.append([v.numpy() - w for v, w in zip(model.trainable_variables, x)])
    return [w + np.mean([d[i] for d in deltas], axis=0) for i, w in enumerate(x)]


def test_kept_momentum_equals_sgdm_with_per_client_accumulators_written_plainly(
        tff_runtime, setup, keras_fn):
    model_fn, select = setup
    sgdm = tff.learning.optimizers.build_sgdm(LR, momentum=MOMENTUM)
    uniform = tff.learning.ClientWeighting.UNIFORM
    process = build_fedavg(model_fn, client_optimizer=sgdm, weighting=uniform,
                           keep_client_optimizer_state=True)
    assert process.slots == ('client_optimizer',)
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 3)

    x, accumulators = [np.asarray(w) for w in initial.trainable], {}
    for r in range(1, 4):
        plan = select.plan(r)
        x = _reference_round(keras_fn, x, accumulators, list(plan.participants),
                             [to_batches(d) for d in plan_rounds(select, plan)])
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert set(stored) == set(accumulators)
    assert len(accumulators) > len(select.plan(1).participants)  # Some clients came back.
    for cid, expected in accumulators.items():
        flat = stored[cid]  # learning_rate, momentum, then the accumulators.
        assert float(flat[0]) == pytest.approx(LR) and float(flat[1]) == pytest.approx(MOMENTUM)
        assert max_abs_diff(flat[2:], expected) <= 1e-5

    reset, _ = run_rounds(build_fedavg(model_fn, client_optimizer=sgdm, weighting=uniform),
                          select, 3, initial)
    assert max_abs_diff(reset.trainable, x) > 1e-4  # Keeping the momentum changed the model.


@pytest.mark.parametrize('overrides,flag', [
    (dict(), 'client_optimizer'),  # Plain SGD has no state.
    (dict(client_optimizer='sgdm', algorithm='fedbuff'), 'algorithm'),
    (dict(client_optimizer='adam', workers='localhost:1,localhost:2'), 'client_optimizer_state'),
])
def test_keep_is_refused_where_there_is_nothing_to_keep_or_nowhere_to_keep_it(overrides, flag):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(client_optimizer_state='keep', **overrides).validate()
    assert e.value.name == flag, str(e.value)
