"""Personalization (FedPer, FedRep, Ditto): what never reaches the server, and parity with FedAvg
and with the papers' client updates written plainly in eager TF."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.compiler import tree_analysis

from fl_tff import simulation
from fl_tff.algorithms import build_fedavg, personalization
from fl_tff.algorithms.ditto import build_ditto
from fl_tff.algorithms.fedper import build_fedper
from fl_tff.algorithms.fedrep import build_fedrep
from fl_tff.communication.error_feedback import ErrorFeedback
from fl_tff.privacy.dpsgd import DpSgd
from tests.helpers import (float_tensor_shapes, max_abs_diff, numpy_top_k, plan_rounds,
                           run_with_client_states, to_batches)

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05
HEAD_SHAPES = {(32, 10), (10,)}  # The 2NN's last layer (hidden 32, 10 classes).
BODY_SHAPES = {(64, 32), (32, 32), (32,)}


@pytest.fixture(scope='module')
def fedavg_weights(tff_runtime, setup):
    """(initial, after 3 rounds) trainable weights of FedAvg (the parity oracle)."""
    model_fn, select = setup
    fedavg = build_fedavg(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    state = fedavg.initialize()
    initial = fedavg.get_model_weights(state).trainable
    for r in range(1, 4):
        state = fedavg.next(state, plan_rounds(select, select.plan(r))).state
    return initial, fedavg.get_model_weights(state).trainable


def _aggregated_shapes(process) -> set:
    tree = process.next_computation.to_building_block()
    calls = [*tree_analysis.find_unsecure_aggregation_in_tree(tree),
             *tree_analysis.find_secure_aggregation_in_tree(tree)]
    return set().union(*(set(float_tensor_shapes(c.argument.type_signature)) for c in calls))


def test_personal_layers_never_reach_an_aggregation(tff_runtime, setup):
    model_fn, _ = setup
    for build in (lambda: build_fedper(model_fn, personal_layers=1),
                  lambda: build_fedrep(model_fn, personal_layers=1, head_epochs=1)):
        shapes = _aggregated_shapes(build())
        assert shapes & BODY_SHAPES == BODY_SHAPES
        assert not shapes & HEAD_SHAPES, f'personal-layer tensors aggregated: {shapes & HEAD_SHAPES}'
    # The same check finds the head in FedAvg's round (as a stateful process: FedPer with 0).
    assert _aggregated_shapes(build_fedper(model_fn, personal_layers=0)) & HEAD_SHAPES == HEAD_SHAPES


def test_personal_mask_counts_layers_from_the_end(setup):
    model_fn, _ = setup
    assert personalization.personal_mask(model_fn, 0) == (False,) * 6
    assert personalization.personal_mask(model_fn, 1) == (False,) * 4 + (True,) * 2
    assert personalization.personal_mask(model_fn, 2) == (False,) * 2 + (True,) * 4
    with pytest.raises(ValueError, match=r'personal_layers must be in \[0, 2\]'):
        personalization.personal_mask(model_fn, 3)


def test_fedper_with_no_personal_layers_equals_fedavg(tff_runtime, setup, fedavg_weights):
    model_fn, select = setup
    initial, trained = fedavg_weights
    fedper = build_fedper(model_fn, personal_layers=0, client_optimizer=SGD(LR),
                          server_optimizer=SGD(1.0))
    state_p, _ = run_with_client_states(fedper, select, 3)
    assert max_abs_diff(trained, initial) > 1e-2
    assert max_abs_diff(fedper.get_model_weights(state_p).trainable, trained) == 0.0


@pytest.mark.parametrize('algorithm', ['fedper', 'fedrep'])
def test_no_personal_layers_runs_from_the_driver_as_fedavg(tff_runtime, tmp_path, algorithm):
    """--personal_layers=0 (documented as valid) through the driver's path, where the clients'
    empty states travel as files: FedPer is then FedAvg exactly; FedRep trains."""
    import dataclasses
    from fl_tff import experiment
    from fl_tff.config import ExperimentConfig
    base = ExperimentConfig(model='2nn', hidden_units=16, num_clients=6, clients_per_round=3,
                            rounds=2, eval_every=2, client_epochs=2, output_dir=str(tmp_path),
                            client_weighting='examples_processed')
    run = experiment.run_experiment(dataclasses.replace(base, algorithm=algorithm,
                                                        personal_layers=0), log=lambda _: None)
    assert np.isfinite(run.history[-1]['train_loss'])
    if algorithm == 'fedper':
        plain = experiment.run_experiment(dataclasses.replace(base, algorithm='fedavg'),
                                          log=lambda _: None)
        assert max_abs_diff(run.final_weights.trainable, plain.final_weights.trainable) == 0.0


def _plain_personal_layers_round(keras_fn, x, heads, ids, datasets, head_steps=None,
                                 residuals=None, fraction=None):
    """One round of FedPer (head_steps None) or FedRep written plainly: each client starts from
    the global body and its own head (the global head the first time); FedPer trains all
    variables together, FedRep the head for its first `head_steps[cid]` steps then the body;
    the server averages the body deltas by examples processed. With `residuals` (client id ->
    e_i), each client sends top-k(x - y + e_i) of its body and keeps the rest as e_i."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    deltas, weights = [], []
    for cid, ds in zip(ids, datasets):
        model = keras_fn()
        model.set_weights(x[:4] + heads.get(cid, x[4:]))
        n = 0
        for step, batch in enumerate(ds):
            with tf.GradientTape() as tape:
                loss = loss_fn(batch['y'], model(batch['x'], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            for j, (v, g) in enumerate(zip(model.trainable_variables, grads)):
                is_head = j >= 4
                if head_steps is None or (step < head_steps[cid]) == is_head:
                    v.assign_sub(LR * g)
            n += len(batch['y'])
        y = [v.numpy() for v in model.trainable_variables]
        heads[cid] = y[4:]
        if residuals is None:
            deltas.append([yy - xx for yy, xx in zip(y[:4], x[:4])])
        else:
            corrected = [xx - yy + e for xx, yy, e in zip(
                x[:4], y[:4], residuals.get(cid, [np.zeros_like(t) for t in x[:4]]))]
            sent = [numpy_top_k(t, fraction) for t in corrected]
            residuals[cid] = [t - s for t, s in zip(corrected, sent)]
            deltas.append([-s for s in sent])
        weights.append(n)
    w = np.array(weights, np.float64) / sum(weights)
    return [xx + sum(wi * d[i] for wi, d in zip(w, deltas)) for i, xx in enumerate(x[:4])] + x[4:]


@pytest.mark.parametrize('algorithm', ['fedper', 'fedrep'])
def test_three_rounds_equal_the_papers_updates_written_plainly(tff_runtime, setup, keras_fn,
                                                               algorithm):
    model_fn, select = setup  # 2 local epochs a round: FedRep trains the head for the first.
    if algorithm == 'fedper':
        process = build_fedper(model_fn, personal_layers=1, client_optimizer=SGD(LR),
                               server_optimizer=SGD(1.0))
    else:
        process = build_fedrep(model_fn, personal_layers=1, head_epochs=1,
                               client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    state, stored = run_with_client_states(process, select, 3)
    x = [np.asarray(w) for w in process.get_model_weights(process.initialize()).trainable]
    heads = {}
    for r in range(1, 4):
        plan = select.plan(r)
        ids = list(plan.participants)
        rounds = plan_rounds(select, plan)
        head_steps = None
        if algorithm == 'fedrep':  # Steps that start inside the first epoch's examples.
            head_steps = {}
            for cid, rnd in zip(ids, rounds):
                element = next(iter(rnd))
                starts = np.cumsum(element['step_sizes'].numpy()) - element['step_sizes'].numpy()
                head_steps[cid] = int(np.sum(starts < element['client_examples'].numpy()))
        x = _plain_personal_layers_round(keras_fn, x, heads, ids,
                                         [to_batches(d) for d in rounds], head_steps)
    trained = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    assert max_abs_diff(trained[:4], x[:4]) <= 1e-5
    assert max_abs_diff(trained[4:], x[4:]) == 0.0  # The server's head never moves.
    assert set(stored) == set(heads)
    for cid, head in heads.items():
        assert max_abs_diff(stored[cid], head) <= 1e-5
        assert max_abs_diff(stored[cid], x[4:]) > 1e-3  # Heads are personal.


def test_fedper_with_error_feedback_equals_the_papers_update_with_compressed_bodies(
        tff_runtime, setup, keras_fn):
    """Error feedback joins FedPer as a second client-state slot beside the head: each client
    sends top-k of its body delta plus its residual; checked against FedPer written plainly
    with that compression (NumPy top-k)."""
    model_fn, select = setup
    fraction = 0.25
    process = build_fedper(model_fn, personal_layers=1, client_optimizer=SGD(LR),
                           server_optimizer=SGD(1.0),
                           error_feedback=ErrorFeedback('topk', fraction))
    assert process.slots == ('personal', 'residual')
    state, stored = process.initialize(), {}
    for r in range(1, 4):
        plan = select.plan(r)
        ids = [c for c, _ in plan.participants]
        out = process.next(state, plan_rounds(select, plan), client_ids=ids, round_num=r,
                           client_states={slot: [stored.get((slot, i), initial) for i in ids]
                                          for slot, initial in process.needs.client_states.items()})
        state = out.state
        for slot, states in out.client_states.items():
            stored.update({(slot, i): s for i, s in zip(ids, states)})
    x = [np.asarray(w) for w in process.get_model_weights(process.initialize()).trainable]
    heads, residuals = {}, {}
    for r in range(1, 4):
        plan = select.plan(r)
        x = _plain_personal_layers_round(
            keras_fn, x, heads, [c for c, _ in plan.participants],
            [to_batches(d) for d in plan_rounds(select, plan)], None, residuals, fraction)
    assert max(np.abs(t).max() for e in residuals.values() for t in e) > 1e-3  # Owed mass.
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    for cid in heads:
        assert max_abs_diff(stored[('personal', cid)], heads[cid]) <= 1e-5
        assert max_abs_diff(stored[('residual', cid)], residuals[cid]) <= 1e-5
    assert len(stored[('residual', cid)]) == 4  # The body's tensors only: heads are never sent.


@pytest.mark.parametrize('ditto_lambda', [0.0, 1e3])
def test_ditto_global_model_equals_fedavg_for_any_lambda(tff_runtime, setup, fedavg_weights,
                                                         ditto_lambda):
    model_fn, select = setup
    ditto = build_ditto(model_fn, ditto_lambda=ditto_lambda, client_optimizer=SGD(LR),
                        server_optimizer=SGD(1.0))
    state_d, _ = run_with_client_states(ditto, select, 3)
    assert max_abs_diff(ditto.get_model_weights(state_d).trainable, fedavg_weights[1]) == 0.0


@pytest.mark.parametrize('algorithm', ['fedper', 'ditto'])
def test_with_dp_sgd_the_shared_model_equals_fedavg_with_dp_sgd(tff_runtime, setup,
                                                               skewed_digits, algorithm):
    """Example-level DP-SGD in a personalized algorithm's local steps: FedPer without personal
    layers and Ditto's global model equal FedAvg with the same DP-SGD (clipping and seeded
    noise) exactly."""
    model_fn, _ = setup
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=2, epochs=1, batch_size=8, seed=11)
    dp_sgd = DpSgd(clip=0.05, noise_multiplier=1.0)
    if algorithm == 'fedper':
        process = build_fedper(model_fn, personal_layers=0, client_optimizer=SGD(LR),
                               server_optimizer=SGD(1.0), dp_sgd=dp_sgd)
    else:
        process = build_ditto(model_fn, ditto_lambda=1.0, client_optimizer=SGD(LR),
                              server_optimizer=SGD(1.0), dp_sgd=dp_sgd)
    state, _ = run_with_client_states(process, select, 2)
    fedavg = build_fedavg(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0),
                          dp_sgd=dp_sgd)
    reference = fedavg.initialize()
    initial = fedavg.get_model_weights(reference).trainable
    for r in range(1, 3):
        reference = fedavg.next(reference, plan_rounds(select, select.plan(r))).state
    expected = fedavg.get_model_weights(reference).trainable
    assert max_abs_diff(expected, initial) > 1e-3
    assert max_abs_diff(process.get_model_weights(state).trainable, expected) == 0.0


def test_ditto_server_state_ignores_personal_models(tff_runtime, setup):
    """The personal model never reaches the server: other personal states, same server state."""
    model_fn, select = setup
    ditto = build_ditto(model_fn, ditto_lambda=0.5, client_optimizer=SGD(LR))
    plan = select.plan(1)
    ids = list(plan.participants)
    rng = np.random.default_rng(0)
    outs = [ditto.next(ditto.initialize(), plan_rounds(select, plan), client_ids=ids, round_num=1,
                       client_states=[[rng.normal(size=t.shape).astype(np.float32)
                                       for t in ditto.initial_client_state()] for _ in ids])
            for _ in range(2)]
    assert max_abs_diff(outs[0].client_states, outs[1].client_states) > 1e-1
    assert max_abs_diff(ditto.get_model_weights(outs[0].state).trainable,
                        ditto.get_model_weights(outs[1].state).trainable) == 0.0


def test_ditto_personal_models_follow_the_papers_update(tff_runtime, setup, keras_fn):
    """One round's personal models against Algorithm 1's step with the proximal operator,
    written plainly; lambda -> infinity gives the global model."""
    model_fn, select = setup
    plan = select.plan(1)
    ids = list(plan.participants)
    rounds = plan_rounds(select, plan)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for ditto_lambda, tolerance in ((0.5, 1e-5), (1e6, None)):
        ditto = build_ditto(model_fn, ditto_lambda=ditto_lambda, client_optimizer=SGD(LR))
        w = [np.asarray(t) for t in ditto.get_model_weights(ditto.initialize()).trainable]
        out = ditto.next(ditto.initialize(), rounds, client_ids=ids, round_num=1,
                         client_states=[ditto.initial_client_state() for _ in ids])
        for cid, rnd, got in zip(ids, rounds, out.client_states):
            if tolerance is None:
                assert max_abs_diff(got, w) <= 1e-4
                continue
            model = keras_fn()
            model.set_weights(w)
            pull = LR * ditto_lambda
            for batch in to_batches(rnd):
                with tf.GradientTape() as tape:
                    loss = loss_fn(batch['y'], model(batch['x'], training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                for v, g, anchor in zip(model.trainable_variables, grads, w):
                    v.assign((v - LR * g + pull * anchor) / (1 + pull))
            assert max_abs_diff(got, [v.numpy() for v in model.trainable_variables]) <= tolerance
            assert max_abs_diff(got, w) > 1e-3


def test_ditto_refuses_client_momentum(setup):
    model_fn, _ = setup
    with pytest.raises(ValueError, match='plain SGD'):
        build_ditto(model_fn, ditto_lambda=1.0, client_optimizer=SGD(LR, momentum=0.9))
