"""SCAFFOLD: parity with the paper's Algorithm 1 (option II) written plainly in TF."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import experiment, simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.scaffold import build_scaffold
from fl_tff.communication.error_feedback import ErrorFeedback
from fl_tff.privacy.dpsgd import DpSgd
from fl_tff.config import ConfigError, ExperimentConfig
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import (clipped_mean_gradients, max_abs_diff, numpy_top_k, plan_rounds,
                           run_with_client_state_slots, run_with_client_states, to_batches)

SGD = tff.learning.optimizers.build_sgdm
LR, NUM_CLIENTS = 0.05, 6


def _mean(updates):
    return [np.mean([u[i] for u in updates], axis=0) for i in range(len(updates[0]))]


def _reference_round(keras_fn, x, c, client_cs, ids, datasets, residuals=None, fraction=None,
                     clip=None, reduce=_mean):
    """One round of Algorithm 1 (Karimireddy et al. 2020), option II, eta_g = 1: clients take
    K steps y <- y - lr (g(y) - c_i + c), c_i+ = c_i - c + (x - y) / (K lr); the server moves
    x by the mean of y - x and c by the sum of (c_i+ - c_i) over N. With `residuals` (client id
    -> e_i), each client sends top-k(x - y + e_i) instead of x - y and keeps the rest as e_i
    (error feedback; dc_i is sent as it is). With `clip`, g is DP-SGD's gradient without noise
    (each example's gradient clipped to `clip`, averaged). `reduce` turns the uploads (the
    y - x, and the dc_i) into what the server applies: x moves by reduce(y - x), c by
    m / N reduce(dc) for m clients (the plain mean: sum(dc) / N)."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    zeros = [np.zeros_like(w) for w in x]
    model = keras_fn()

    @tf.function(reduce_retracing=True)  # One corrected SGD step; the loop stays in Python.
    def step(inputs, labels, c, ci):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g, cc, cci in zip(model.trainable_variables, grads, c, ci):
            v.assign_sub(LR * (g - cci + cc))

    dys, dcs = [], []
    for cid, ds in zip(ids, datasets):
        model.set_weights(x)
        ci = client_cs.get(cid, zeros)
        steps = 0
        for batch in ds:
            if clip is None:
                step(batch['x'], batch['y'], [tf.constant(t) for t in c],
                     [tf.constant(t) for t in ci])
            else:
                grads = clipped_mean_gradients(model, batch['x'], batch['y'], clip)
                for v, g, cc, cci in zip(model.trainable_variables, grads, c, ci):
                    v.assign_sub(LR * (g - cci + cc))
            steps += 1
        y = [v.numpy() for v in model.trainable_variables]
        new_ci = [cci - cc + (xx - yy) / (steps * LR) for cci, cc, xx, yy in zip(ci, c, x, y)]
        if residuals is None:
            dys.append([yy - xx for yy, xx in zip(y, x)])
        else:
            corrected = [xx - yy + e for xx, yy, e in zip(x, y, residuals.get(cid, zeros))]
            sent = [numpy_top_k(t, fraction) for t in corrected]
            residuals[cid] = [t - s for t, s in zip(corrected, sent)]
            dys.append([-s for s in sent])
        dcs.append([n - o for n, o in zip(new_ci, ci)])
        client_cs[cid] = new_ci
    new_x = [xx + d for xx, d in zip(x, reduce(dys))]
    new_c = [cc + d * len(dcs) / NUM_CLIENTS for cc, d in zip(c, reduce(dcs))]
    return new_x, new_c


def test_three_rounds_equal_algorithm_1_written_plainly(tff_runtime, setup, keras_fn, tmp_path):
    model_fn, select = setup
    process = build_scaffold(model_fn, num_clients=NUM_CLIENTS, client_optimizer=SGD(LR),
                             server_optimizer=SGD(1.0),
                             weighting=tff.learning.ClientWeighting.UNIFORM)
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 3)
    # The same rounds with the control variates read from files inside the worker: identical.
    from_files = process.reading_values_from(str(tmp_path / 'states'))
    assert from_files.next_computation.type_signature.parameter[2].member.dtype.type is np.str_
    assert from_files.next_computation.type_signature.result[2].member.dtype.type is np.str_
    state_f, stored_f = run_with_client_states(from_files, select, 3)
    for a, b in zip(process.get_model_weights(state).trainable,
                    from_files.get_model_weights(state_f).trainable):
        np.testing.assert_array_equal(a, b)
    assert stored_f.keys() == stored.keys()
    for cid in stored:
        for a, b in zip(stored[cid], stored_f[cid]):
            np.testing.assert_array_equal(a, b)
    assert list((tmp_path / 'states').iterdir()) == []  # Each round's files are gone after it.

    x = [np.asarray(w) for w in initial.trainable]
    c = [np.zeros_like(w) for w in x]
    client_cs = {}
    for r in range(1, 4):
        plan = select.plan(r)
        x, c = _reference_round(keras_fn, x, c, client_cs, list(plan.participants),
                                [to_batches(d) for d in plan_rounds(select, plan)])

    weights = process.get_model_weights(state)
    server_c = state.finalizer[1]
    assert max(np.abs(t).max() for t in c) > 1e-3  # The control variates moved.
    assert max_abs_diff(weights.trainable, x) <= 1e-5
    assert max_abs_diff(server_c, c) <= 1e-5
    assert set(stored) == set(client_cs)
    for cid, expected in client_cs.items():
        assert max_abs_diff(stored[cid], expected) <= 1e-5

    fedavg, _ = run_rounds(build_fedavg(model_fn, client_optimizer=SGD(LR),
                                        weighting=tff.learning.ClientWeighting.UNIFORM),
                           select, 3, initial)
    assert max_abs_diff(fedavg.trainable, weights.trainable) > 1e-4  # Corrections matter.


def test_with_error_feedback_three_rounds_equal_algorithm_1_with_compressed_deltas(
        tff_runtime, setup, keras_fn):
    """Error feedback joins SCAFFOLD as a second client-state slot: each client sends
    top-k(x - y + e_i) and keeps the rest as e_i beside its c_i; dc_i is sent as it is. Checked
    against Algorithm 1 with that compression written plainly (NumPy top-k)."""
    model_fn, select = setup
    fraction = 0.3
    process = build_scaffold(model_fn, num_clients=NUM_CLIENTS, client_optimizer=SGD(LR),
                             server_optimizer=SGD(1.0),
                             weighting=tff.learning.ClientWeighting.UNIFORM,
                             error_feedback=ErrorFeedback('topk', fraction))
    assert process.slots == ('control_variate', 'residual')
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_state_slots(process, select, 3)

    x = [np.asarray(w) for w in initial.trainable]
    c = [np.zeros_like(w) for w in x]
    client_cs, residuals = {}, {}
    for r in range(1, 4):
        plan = select.plan(r)
        clients = [cid for cid, _ in plan.participants]
        x, c = _reference_round(keras_fn, x, c, client_cs, clients,
                                [to_batches(d) for d in plan_rounds(select, plan)],
                                residuals, fraction)
    assert max(np.abs(t).max() for e in residuals.values() for t in e) > 1e-3  # Owed mass.
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff(state.finalizer[1], c) <= 1e-5
    for cid in client_cs:
        assert max_abs_diff(stored[('control_variate', cid)], client_cs[cid]) <= 1e-5
        assert max_abs_diff(stored[('residual', cid)], residuals[cid]) <= 1e-5


def test_with_dp_sgd_two_rounds_equal_algorithm_1_with_clipped_gradients(
        tff_runtime, setup, keras_fn, skewed_digits):
    """Example-level DP-SGD inside SCAFFOLD: each local step's g_i is the clipped per-example
    mean (noise 0 here, so the oracle can follow it), corrected by c - c_i as always."""
    model_fn, _ = setup  # Two clients a round, one epoch: the oracle loops over examples.
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=2, epochs=1, batch_size=8, seed=11)
    process = build_scaffold(model_fn, num_clients=NUM_CLIENTS, client_optimizer=SGD(LR),
                             server_optimizer=SGD(1.0),
                             weighting=tff.learning.ClientWeighting.UNIFORM,
                             dp_sgd=DpSgd(clip=0.05, noise_multiplier=0.0))
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 2)
    x = [np.asarray(w) for w in initial.trainable]
    c = [np.zeros_like(w) for w in x]
    client_cs = {}
    for r in range(1, 3):
        plan = select.plan(r)
        data = [to_batches(d) for d in plan_rounds(select, plan)]
        if r == 1:  # Clipping is active: round 1 without it ends elsewhere.
            unclipped, _ = _reference_round(keras_fn, x, c, {}, list(plan.participants), data)
        x, c = _reference_round(keras_fn, x, c, client_cs, list(plan.participants), data,
                                clip=0.05)
        if r == 1:
            assert max_abs_diff(x, unclipped) > 1e-3
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff(state.finalizer[1], c) <= 1e-5
    for cid, expected in client_cs.items():
        assert max_abs_diff(stored[cid], expected) <= 1e-4


def test_refuses_a_client_optimizer_with_momentum(setup):
    model_fn, _ = setup
    with pytest.raises(ValueError, match='plain SGD'):
        build_scaffold(model_fn, num_clients=NUM_CLIENTS,
                       client_optimizer=SGD(LR, momentum=0.9))


# Through the experiment path: flags -> registry -> process with client state kept by the run.
BASE = ExperimentConfig(dataset='digits', model='logreg', num_clients=8, clients_per_round=4,
                        client_epochs=2, client_batch_size=32, rounds=1, eval_every=1, seed=3,
                        client_weighting='uniform')


def _experiment(tmp_path, name, **overrides):
    cfg = dataclasses.replace(BASE, output_dir=str(tmp_path), experiment_name=name, **overrides)
    return experiment.run_experiment(cfg.validate(), log=lambda _: None)


def test_driver_path_round_one_is_fedavg_later_rounds_are_not_and_uplink_carries_two_models(
        tff_runtime, tmp_path):
    """With c = c_i = 0 the first round is FedAvg's (uniform weights); afterwards the control
    variates kept as client state change the result; each client sends x - y and dc_i."""
    one = _experiment(tmp_path, 'scaffold1', algorithm='scaffold')
    fedavg_one = _experiment(tmp_path, 'fedavg1', algorithm='fedavg')
    assert max_abs_diff(one.final_weights.trainable, fedavg_one.final_weights.trainable) <= 1e-6
    params = sum(int(np.size(t)) for t in one.final_weights.trainable)
    assert one.history[-1]['uplink_bytes_per_client'] == 2 * 4 * params
    assert fedavg_one.history[-1]['uplink_bytes_per_client'] == 4 * params

    three = _experiment(tmp_path, 'scaffold3', algorithm='scaffold', rounds=3, eval_every=3)
    fedavg_three = _experiment(tmp_path, 'fedavg3', algorithm='fedavg', rounds=3, eval_every=3)
    assert max_abs_diff(three.final_weights.trainable, fedavg_three.final_weights.trainable) > 1e-4


@pytest.mark.parametrize('overrides,message', [
    (dict(workers='localhost:1,localhost:2'), 'client state'),
])
def test_driver_refuses_what_scaffold_cannot_do_honestly(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, algorithm='scaffold', **overrides).validate()


@pytest.mark.parametrize('overrides', [
    dict(compression='quantize'), dict(compression='topk', error_feedback=True),
    dict(dp='dpsgd', noise_multiplier=1.0, clip=1.0), dict(dp='fixed', noise_multiplier=1.0),
    dict(dp='adaptive', noise_multiplier=0.1), dict(secure_agg=True), dict(aggregator='median'),
    dict(secure_agg=True, secagg=True),
    dict(dp='fixed', noise_multiplier=1.0, secure_agg=True, secagg=True),
    dict(dp='distributed', secure_agg=True, noise_multiplier=1.0),
    dict(dp='tree', server_optimizer='ftrlm', client_sampling='epochs', noise_multiplier=1.0)])
def test_compression_error_feedback_dp_secure_sums_and_robust_rules_combine_with_scaffold(
        overrides):
    """The model delta goes through the model aggregator (so it can be compressed), error
    feedback wraps the upload, DP-SGD is each local step's gradient; dc_i goes through the same
    aggregator options uncompressed (user-level DP, a secure sum, a robust rule)."""
    dataclasses.replace(BASE, algorithm='scaffold', **overrides).validate()


def _clipped(update, clip):
    norm = np.sqrt(sum(float(np.sum(np.square(t))) for t in update))
    return [t * min(1.0, clip / norm) for t in update]


@pytest.mark.parametrize('rule', ['dp_fixed', 'median'])
def test_both_uploads_go_through_the_aggregator_options(tff_runtime, setup, keras_fn, rule):
    """User-level DP (noise 0 here, so the oracle can follow it) clips each client's model delta
    and its dc_i to the clip norm apart and divides each sum by the cohort; a robust rule takes
    the coordinate-wise median of each. x moves by the model deltas' aggregate, c by m / N times
    the dc_i's (Algorithm 1 written plainly, with those aggregates in place of the means)."""
    from fl_tff.aggregators import registry as aggregation
    from fl_tff.aggregators import chain as aggregator_chain
    from fl_tff.privacy import aggregators as dp_aggregators
    model_fn, select = setup
    clip, cohort = 0.05, 4
    if rule == 'dp_fixed':
        params = dict(noise_multiplier=0.0, clip=clip, delta=1e-5, target_epsilon=0.0)

        def chain(seed):
            return aggregator_chain.build(
                [(dp_aggregators.FIXED.aggregator_layer, params)],
                aggregator_chain.Context(uniform=True, cohort=cohort, seed=seed))

        def reduce(updates):
            return [np.sum([u[i] for u in updates], axis=0) / cohort
                    for i in range(len(updates[0]))]
        model_aggregator, side_aggregator = chain(0), chain(1)
        updates = lambda ups: reduce([_clipped(u, clip) for u in ups])  # noqa: E731
    else:
        model_aggregator = aggregation.build_model_aggregator('median', uniform=True)
        side_aggregator = aggregation.build_model_aggregator('median', uniform=True)
        updates = lambda ups: [np.median([u[i] for u in ups], axis=0)  # noqa: E731
                               for i in range(len(ups[0]))]
    process = build_scaffold(model_fn, num_clients=NUM_CLIENTS, client_optimizer=SGD(LR),
                             server_optimizer=SGD(1.0),
                             weighting=tff.learning.ClientWeighting.UNIFORM,
                             model_aggregator=model_aggregator, side_aggregator=side_aggregator)
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 2)
    x = [np.asarray(w) for w in initial.trainable]
    c = [np.zeros_like(w) for w in x]
    client_cs = {}
    for r in range(1, 3):
        plan = select.plan(r)
        data = [to_batches(d) for d in plan_rounds(select, plan)]
        assert len(plan.participants) == cohort
        if r == 2:  # The rule matters: the plain means end elsewhere.
            plain, _ = _reference_round(keras_fn, x, c, dict(client_cs), list(plan.participants),
                                        data)
        x, c = _reference_round(keras_fn, x, c, client_cs, list(plan.participants), data,
                                reduce=updates)
        if r == 2:
            assert max_abs_diff(x, plain) > 1e-3
    assert max(np.abs(t).max() for t in c) > 1e-3  # The control variates moved.
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff(state.finalizer[1], c) <= 1e-5
    for cid, expected in client_cs.items():  # Clients keep their own c_i+, unclipped.
        assert max_abs_diff(stored[cid], expected) <= 1e-5
