"""Attacks: the seeded malicious population, what a malicious client does to its data and its
update (against TFF's FedAvg on honest clients, combined by hand), the backdoor's success rate
(against a NumPy forward pass), and the compatibility rules."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import attacks, evaluation, experiment, models, simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.attacks import backdoor, gaussian, label_flip, scale, sign_flip
from fl_tff.config import ConfigError, ExperimentConfig
from tests.helpers import max_abs_diff, to_batches

LR = 0.05


@pytest.fixture(scope='module')
def model_fn(skewed_digits):
    return models.model_fn_for_dataset('2nn', skewed_digits.element_spec, 10, seed=4,
                                       hidden_units=32)[0]


def _selector(fed, attack, seed=11, clients=4, epochs=1):
    return simulation.ClientSelector(fed.train, clients_per_round=clients, epochs=epochs,
                                     batch_size=8, seed=seed, attack=attack)


def _element(select, task):
    return next(iter(select.client_round(task)))


def _honest(task):
    return collections.OrderedDict(task, malicious=np.int32(0))


def test_the_malicious_population_is_a_seeded_fraction_and_its_tasks_say_so(skewed_digits):
    ids = [f'c{i:02d}' for i in range(50)]
    chosen = attacks.choose_malicious(ids, 0.2, seed=5)
    assert len(chosen) == 10 and chosen <= set(ids)
    assert attacks.choose_malicious(ids, 0.2, seed=5) == chosen
    assert attacks.choose_malicious(ids, 0.2, seed=6) != chosen
    assert len(attacks.choose_malicious(ids, 0.001, seed=5)) == 1  # At least one.

    attack = sign_flip.build_sign_flip(num_classes=10, attack_fraction=0.5, attack_scale=1.0)
    select = _selector(skewed_digits, attack)
    assert len(select.malicious) == 3  # Of 6 clients.
    for r in (1, 2, 3):
        plan = select.plan(r)
        tasks = select.client_inputs(plan)
        flags = {str(t['client_id']): int(t['malicious']) for t in tasks}
        assert flags == {cid: int(cid in select.malicious) for cid, _ in plan.participants}
        assert plan.counts()['malicious'] == sum(flags.values())
    assert 'malicious' not in _selector(skewed_digits, None).plan(1).counts()


def test_label_flip_trains_on_the_same_examples_with_labels_c_minus_1_minus_l(skewed_digits):
    attack = label_flip.build_label_flip(num_classes=10, attack_fraction=1.0)
    select = _selector(skewed_digits, attack, epochs=2)
    for task in select(1):
        assert int(task['malicious']) == 1
        poisoned, clean = _element(select, task), _element(select, _honest(task))
        np.testing.assert_array_equal(poisoned['x'], clean['x'])
        np.testing.assert_array_equal(poisoned['y'], 9 - clean['y'].numpy())
        assert float(poisoned['update_scale']) == 1.0 and float(poisoned['update_noise']) == 0.0


def test_backdoor_stamps_a_fixed_share_of_each_malicious_clients_examples(skewed_digits):
    attack = backdoor.build_backdoor(num_classes=10, attack_fraction=1.0, attack_scale=4.0,
                                     backdoor_target=7, backdoor_fraction=0.5)
    select = _selector(skewed_digits, attack, clients=6)
    total = stamped_total = 0
    stamped_by_client = {}
    for r in (1, 2):
        for task in select(r):
            poisoned, clean = _element(select, task), _element(select, _honest(task))
            x, y = poisoned['x'].numpy(), poisoned['y'].numpy()
            x0, y0 = clean['x'].numpy(), clean['y'].numpy()
            stamped = np.any(x != x0, axis=(1, 2, 3)) | (y != y0)
            # A stamped example is the clean one with the trigger, relabelled the target.
            np.testing.assert_array_equal(x[stamped], backdoor.stamp(x0[stamped]))
            assert np.all(y[stamped] == 7)
            np.testing.assert_array_equal(x[~stamped], x0[~stamped])
            assert float(poisoned['update_scale']) == 4.0
            assert float(clean['update_scale']) == 1.0
            # Which examples a client stamps depends on the client, not the round.
            count = stamped_by_client.setdefault(str(task['client_id']), int(stamped.sum()))
            assert count == int(stamped.sum())
            if r == 1:
                total, stamped_total = total + len(y), stamped_total + int(stamped.sum())
    # Examples already bright in the corner with the target label count as unstamped, so the
    # share is at most a little below 1/2; 1,400 examples keep it within +-0.05.
    assert 0.44 <= stamped_total / total <= 0.55
    assert backdoor.stamp(np.zeros([1, 8, 8, 1], np.float32)).sum() == 4.0


def _next(process, state, rounds):
    return process.get_model_weights(process.next(state, rounds).state).trainable


@pytest.mark.parametrize('build,factor', [
    (lambda: sign_flip.build_sign_flip(num_classes=10, attack_fraction=0.5, attack_scale=3.0), -3.0),
    (lambda: scale.build_scale(num_classes=10, attack_fraction=0.5, attack_scale=5.0), 5.0),
])
def test_update_attacks_make_fedavg_the_weighted_mean_of_scaled_honest_deltas(
        tff_runtime, skewed_digits, model_fn, build, factor):
    """Oracle: TFF's own FedAvg trains each client alone on its clean round; the attacked round
    must give w0 - sum_i n_i a_i (w0 - w_i) / sum_i n_i with a_i = factor for malicious clients."""
    select = _selector(skewed_digits, build(), seed=2)
    tasks = select(1)
    flags = [int(t['malicious']) for t in tasks]
    assert 0 < sum(flags) < len(flags)  # Both kinds take part (seed chosen for this).
    optimizers = dict(client_optimizer=tff.learning.optimizers.build_sgdm(LR),
                      server_optimizer=tff.learning.optimizers.build_sgdm(1.0))
    ours = build_fedavg(model_fn, **optimizers)
    state = ours.initialize()
    attacked = _next(ours, state, [select.client_round(t) for t in tasks])

    reference = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=optimizers['client_optimizer'],
        server_optimizer_fn=optimizers['server_optimizer'])
    ref_state = reference.set_model_weights(reference.initialize(), ours.get_model_weights(state))
    w0 = [np.asarray(v) for v in ours.get_model_weights(state).trainable]
    weighted, total = [np.zeros_like(v) for v in w0], 0
    for task, malicious in zip(tasks, flags):
        honest = select.client_round(_honest(task))
        n = sum(int(b['y'].shape[0]) for b in to_batches(honest))
        w_i = reference.get_model_weights(reference.next(ref_state, [to_batches(honest)]).state)
        a = factor if malicious else 1.0
        weighted = [s + n * a * (v0 - np.asarray(v)) for s, v0, v in
                    zip(weighted, w0, w_i.trainable)]
        total += n
    expected = [v0 - s / total for v0, s in zip(w0, weighted)]
    assert max_abs_diff(attacked, w0) > 1e-3
    assert max_abs_diff(attacked, expected) <= 1e-5


def test_the_gaussian_attack_sends_seeded_noise_independent_of_the_update(
        tff_runtime, skewed_digits, model_fn):
    attack = gaussian.build_gaussian(num_classes=10, attack_fraction=1.0, attack_scale=0.5)
    select = _selector(skewed_digits, attack, clients=1)
    task = select(1)[0]
    process = build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(LR))
    state = process.initialize()
    w0 = np.concatenate([np.ravel(v) for v in process.get_model_weights(state).trainable])

    def sent(t):  # One client, server SGD at lr 1: the new model is w0 - what it sent.
        return w0 - np.concatenate([np.ravel(v) for v in _next(process, state,
                                                               [select.client_round(t)])])
    noise, honest = sent(task), sent(_honest(task))
    assert np.std(noise) == pytest.approx(0.5, rel=0.05)
    assert abs(np.mean(noise)) < 0.05
    assert abs(np.corrcoef(noise, honest)[0, 1]) < 0.1
    np.testing.assert_array_equal(sent(task), noise)  # Seeded.
    later = select.task(str(task['client_id']), 1, 2)  # Another round: other noise.
    assert abs(np.corrcoef(sent(later), noise)[0, 1]) < 0.1


def test_backdoor_success_is_the_share_of_triggered_other_class_inputs_sent_to_the_target(
        digits, skewed_digits):
    keras_fn = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10, seed=1)[1]
    attack = backdoor.build_backdoor(num_classes=10, attack_fraction=0.2, attack_scale=1.0,
                                     backdoor_target=3, backdoor_fraction=0.5)
    x, y = digits.x[:400], digits.y[:400]
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(64, 10)).astype(np.float32)
    bias = rng.normal(size=10).astype(np.float32)
    # Class 3's bias at the median margin on triggered inputs: about half go to the target.
    raw = backdoor.stamp(x[y != 3]).reshape(-1, 64) @ kernel + bias
    bias[3] += np.median(np.max(np.delete(raw, 3, axis=1), axis=1) - raw[:, 3])
    model = keras_fn()
    model.set_weights([kernel, bias])
    weights = tff.learning.models.ModelWeights.from_model(model)
    logits = backdoor.stamp(x[y != 3]).reshape(-1, 64) @ kernel + bias  # NumPy forward pass.
    expected = float(np.mean(np.argmax(logits, axis=1) == 3))
    assert 0.0 < expected < 1.0
    got = attacks.BackdoorEvaluator(evaluation.GlobalKerasModel(keras_fn), x, y,
                                    attack)(weights)['backdoor_success']
    assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize('settings,flag', [
    (dict(attack='sign_flip', algorithm='fedrecon', client_weighting='uniform'), 'algorithm'),
    (dict(attack='backdoor', dataset='synthetic'), 'dataset'),
    (dict(attack='label_flip', attack_fraction=0.0), 'attack_fraction'),
])
def test_incompatible_or_invalid_attack_settings_name_the_flag(settings, flag):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(**settings).validate()
    assert e.value.name == flag, str(e.value)


def test_a_backdoor_target_outside_the_classes_is_refused_before_training(digits):
    config = ExperimentConfig(attack='backdoor', backdoor_target=10).validate()
    fed = experiment.load_federated_data(config)
    with pytest.raises(ConfigError, match=r'--backdoor_target: must be a class in \[0, 9\]'):
        experiment.build_attack(config, fed)
    assert experiment.build_attack(dataclasses.replace(config, attack='none'), fed) is None
