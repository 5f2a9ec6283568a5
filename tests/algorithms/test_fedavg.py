"""Our FedAvg against TFF's built-in algorithms, TFF's simulation tooling, and edge cases."""

import asyncio
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import simulation
from fl_tff.algorithms import ALGORITHMS, build_fedavg, get_algorithm
from fl_tff.data import client_rounds
from tests.helpers import client_rounds as rounds_of, max_abs_diff, to_batches, valid_choices

CLIENT_LR, SERVER_LR = 0.05, 1.0


def takes_rounds(process) -> bool:
    """Whether `process` trains on client rounds (ours) rather than datasets of batches (TFF's)."""
    return client_rounds.takes_rounds(process.next.type_signature.parameter[1].member)


def run_rounds(process, select, rounds, initial_weights=None):
    """(final weights, per-round metrics) of `rounds` rounds from `initial_weights`: the clients'
    rounds, or for TFF's builders the same steps as datasets of batches."""
    batched = not takes_rounds(process)
    state = process.initialize()
    if initial_weights is not None:
        state = process.set_model_weights(state, initial_weights)
    metrics = []
    for r in range(1, rounds + 1):
        data = rounds_of(select, r)
        output = process.next(state, [to_batches(d) for d in data] if batched else data)
        state = output.state
        metrics.append(output.metrics)
    return process.get_model_weights(state), metrics


@pytest.mark.parametrize('name', ['sgdm', 'adam'])
def test_client_optimizers_match_tffs_builder_with_the_same_client_optimizer(tff_runtime, setup,
                                                                              name):
    """`--client_optimizer`: FedAvg with each stateful client optimizer (its declared defaults)
    equals TFF's `build_weighted_fed_avg` given the same optimizer (state reset each round, as
    TFF's builder does), and differs from plain SGD (the optimizer is really used)."""
    from fl_tff.algorithms.client_optimizers import CLIENT_OPTIMIZERS
    model_fn, select = setup
    option = CLIENT_OPTIMIZERS.get(name)

    def client():
        return option.build(CLIENT_LR, **{p.name: p.default for p in option.params})

    ours = build_fedavg(model_fn, client_optimizer=client(),
                        server_optimizer=tff.learning.optimizers.build_sgdm(SERVER_LR))
    reference = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=client(),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(SERVER_LR))
    plain = build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(CLIENT_LR),
                         server_optimizer=tff.learning.optimizers.build_sgdm(SERVER_LR))
    initial = ours.get_model_weights(ours.initialize())
    ours_w, _ = run_rounds(ours, select, 3, initial)
    ref_w, _ = run_rounds(reference, select, 3, initial)
    plain_w, _ = run_rounds(plain, select, 3, initial)
    assert max_abs_diff(ours_w.trainable, ref_w.trainable) <= 1e-5
    assert max_abs_diff(ours_w.trainable, plain_w.trainable) > 1e-3


@pytest.mark.parametrize('weighting,reference_builder', [
    (tff.learning.ClientWeighting.NUM_EXAMPLES, tff.learning.algorithms.build_weighted_fed_avg),
    (tff.learning.ClientWeighting.UNIFORM, tff.learning.algorithms.build_unweighted_fed_avg),
])
def test_parity_with_tff_builtin_after_three_rounds(tff_runtime, setup, weighting, reference_builder):
    model_fn, select = setup
    ours = build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(CLIENT_LR),
                        server_optimizer=tff.learning.optimizers.build_sgdm(SERVER_LR),
                        weighting=weighting)
    kwargs = dict(client_optimizer_fn=tff.learning.optimizers.build_sgdm(CLIENT_LR),
                  server_optimizer_fn=tff.learning.optimizers.build_sgdm(SERVER_LR))
    if reference_builder is tff.learning.algorithms.build_weighted_fed_avg:
        kwargs['client_weighting'] = weighting
    reference = reference_builder(model_fn, **kwargs)
    initial = ours.get_model_weights(ours.initialize())
    ours_w, ours_metrics = run_rounds(ours, select, 3, initial)
    ref_w, ref_metrics = run_rounds(reference, select, 3, initial)
    assert max_abs_diff(ours_w.trainable, initial.trainable) > 1e-2  # it trained
    assert max_abs_diff(ours_w.trainable, ref_w.trainable) <= 1e-5
    for m_ours, m_ref in zip(ours_metrics, ref_metrics):
        assert m_ours['client_work']['train']['loss'] == pytest.approx(
            m_ref['client_work']['train']['loss'], rel=1e-5)


def test_example_weighting_differs_from_uniform_on_skewed_clients(tff_runtime, setup):
    model_fn, select = setup
    weighted = build_fedavg(model_fn, weighting=tff.learning.ClientWeighting.NUM_EXAMPLES)
    uniform = build_fedavg(model_fn, weighting=tff.learning.ClientWeighting.UNIFORM)
    initial = weighted.get_model_weights(weighted.initialize())
    w1, _ = run_rounds(weighted, select, 1, initial)
    w2, _ = run_rounds(uniform, select, 1, initial)
    assert max_abs_diff(w1.trainable, w2.trainable) > 1e-3


def test_one_round_is_the_example_weighted_average_of_client_models(tff_runtime, setup, skewed_digits):
    """With server SGD at lr 1, the new model is sum_k n_k w_k / sum_k n_k (computed here by hand)."""
    model_fn, _ = setup
    datasets = [client_rounds.from_batches(skewed_digits.train.create_tf_dataset_for_client(c).batch(16))
                for c in skewed_digits.train.client_ids[:3]]
    process = build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.1))
    state = process.initialize()
    initial = process.get_model_weights(state)
    new = process.get_model_weights(process.next(state, datasets).state)

    # Each client alone: a one-client round returns that client's locally trained model.
    locals_, sizes = [], []
    for ds in datasets:
        locals_.append(process.get_model_weights(process.next(state, [ds]).state).trainable)
        sizes.append(sum(int(b['y'].shape[0]) for b in to_batches(ds)))
    expected = [sum(n * w[i] for n, w in zip(sizes, locals_)) / sum(sizes)
                for i in range(len(initial.trainable))]
    assert max_abs_diff(new.trainable, expected) <= 1e-5


def test_a_client_with_non_finite_update_is_ignored(tff_runtime, setup, skewed_digits):
    model_fn, _ = setup
    good = [client_rounds.from_batches(skewed_digits.train.create_tf_dataset_for_client(c).batch(16))
            for c in skewed_digits.train.client_ids[:2]]
    bad = client_rounds.from_batches(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.full([20, 8, 8, 1], np.nan, np.float32), y=np.zeros([20], np.int32))).batch(16))
    process = build_fedavg(model_fn)
    state = process.initialize()
    with_bad = process.get_model_weights(process.next(state, good + [bad]).state)
    without = process.get_model_weights(process.next(state, good).state)
    assert max_abs_diff(with_bad.trainable, without.trainable) <= 1e-6
    assert all(np.all(np.isfinite(w)) for w in with_bad.trainable)


def test_runs_under_tff_run_training_process_with_uniform_sampling(tff_runtime, setup, skewed_digits):
    """TFF's loop drives the process composed with our dataset computation: the selector hands
    it client tasks and the worker builds the data."""
    model_fn, _ = setup
    selection = simulation.ClientSelector(skewed_digits.train, clients_per_round=3, epochs=1,
                                          batch_size=16, seed=5)

    test_sets = [skewed_digits.test.create_tf_dataset_for_client(c).batch(64)
                 for c in skewed_digits.test.client_ids]
    fed_eval = tff.learning.algorithms.build_fed_eval(model_fn)
    process = simulation.compose(
        build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.1)),
        selection.dataset_computation())

    def evaluation_fn(state, datasets):
        eval_state = fed_eval.set_model_weights(fed_eval.initialize(), process.get_model_weights(state))
        metrics = fed_eval.next(eval_state, datasets).metrics
        return {'accuracy': metrics['client_work']['eval']['current_round_metrics'][
            'sparse_categorical_accuracy']}

    releases = tff.program.MemoryReleaseManager()
    # TFF's loop takes the thread's current event loop (asyncio.get_event_loop), of which an
    # earlier asyncio.run in this test process leaves none: give it one, as a script would.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        final_state = tff.simulation.run_training_process(
            process, selection, total_rounds=6, evaluation_fn=evaluation_fn,
            evaluation_selection_fn=lambda _: test_sets, rounds_per_evaluation=3,
            metrics_managers=[releases])
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    released = dict(releases.values())
    assert sorted(released) == list(range(7))
    assert released[6]['evaluation/accuracy'] > released[0]['evaluation/accuracy'] + 0.3
    assert 'evaluation/accuracy' not in released[5]  # evaluated every 3 rounds
    # The same rounds through our own loop give the same model.
    state, _ = simulation.run_training(process, selection, rounds=6)
    assert max_abs_diff(process.get_model_weights(state).trainable,
                        process.get_model_weights(final_state).trainable) <= 1e-6


def test_registry_knows_fedavg_and_rejects_unknown_names():
    assert get_algorithm('fedavg').build is build_fedavg
    with pytest.raises(ValueError, match=f"unknown algorithm 'fedsomething'; valid choices: {valid_choices(ALGORITHMS)}$"):
        get_algorithm('fedsomething')
