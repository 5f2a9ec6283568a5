"""DP-FTRL: the tree ledger against dp_accounting, its once-per-tree check, epochs of the
population, the FTRL-M server step against the paper's rule written plainly, the tree
aggregator against DP-FedAvg's at zero noise, the compatibility rules and one run end to end."""


import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import experiment, simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.ftrl import FtrlmOptimizer
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.privacy import aggregators, tree
from fl_tff.rounds import RoundPlan
from tests.helpers import max_abs_diff


def _dp_accounting_epsilon(z, per_tree, rounds, delta, per_epoch=None):
    """Every tree composed; with `per_epoch`, one tree (the epoch's longest) per epoch
    (dp_accounting directly)."""
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    full, rest = divmod(rounds, per_epoch or per_tree)
    for _ in range(full):
        accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, per_tree))
    if rest:
        accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, min(per_tree, rest)))
    return accountant.get_epsilon(delta)


def _plan(r, ids):
    return RoundPlan(r, tuple(ids), tuple((c, 1) for c in ids))


@pytest.mark.parametrize('z,per_tree', [(1.0, 10), (2.5, 4)])
def test_the_tree_ledger_charges_dp_accountings_tree_events(z, per_tree):
    ledger = tree.TreeLedger(z, per_tree, delta=1e-5)
    for r in range(1, 24):
        # Each round takes fresh clients within its tree (ids reused across trees).
        row = ledger.charge(_plan(r, [f'c{(r - 1) % per_tree}a', f'c{(r - 1) % per_tree}b']))
        assert row['epsilon'] == pytest.approx(_dp_accounting_epsilon(z, per_tree, r, 1e-5),
                                               abs=1e-6)
    assert ledger.spent() == pytest.approx(_dp_accounting_epsilon(z, per_tree, 23, 1e-5), abs=1e-6)
    assert 'no sampling or shuffling' in ledger.statement()


def test_trees_shorter_than_an_epoch_are_charged_once_per_epoch_while_clients_join_once_per_epoch():
    """Epochs of 12 rounds, trees of 3: each client joins once per epoch, so one client's data
    enters one tree per epoch (parallel composition); charging every tree overstates ε."""
    z, per_tree, per_epoch, delta = 1.0, 3, 12, 1e-5
    ledger = tree.TreeLedger(z, per_tree, delta, rounds_per_epoch=per_epoch)
    every_tree = tree.TreeLedger(z, per_tree, delta)
    for r in range(1, 31):
        clients = [f'c{(r - 1) % per_epoch}']  # One new client per round, each once per epoch.
        row = ledger.charge(_plan(r, clients))
        every_tree.charge(_plan(r, clients))
        assert row['epsilon'] == pytest.approx(
            _dp_accounting_epsilon(z, per_tree, r, delta, per_epoch), abs=1e-6)
    assert ledger.spent() < every_tree.spent() / 2  # 3 trees charged instead of 10.
    assert every_tree.spent() == pytest.approx(_dp_accounting_epsilon(z, per_tree, 30, delta),
                                               abs=1e-6)
    assert 'one tree per epoch of 12 rounds' in ledger.statement()
    assert ledger.summary()['charged'] == 'one tree per epoch'
    # A client seen twice in one epoch (in two trees): from then on every tree is charged.
    ledger.charge(_plan(31, ['c0']))  # Round 31 opens epoch 3's third tree; c0 was in round 25.
    assert ledger.spent() == pytest.approx(_dp_accounting_epsilon(z, per_tree, 31, delta),
                                           abs=1e-6)
    assert 'every tree composed' in ledger.statement()


def test_the_tree_ledger_refuses_a_client_twice_in_one_tree_and_allows_it_in_the_next():
    ledger = tree.TreeLedger(1.0, 3, delta=1e-5)
    ledger.charge(_plan(1, ['a', 'b']))
    ledger.charge(_plan(2, ['c']))
    with pytest.raises(tree.ParticipationError, match=r"client\(s\) \['a'\] would take part twice"):
        ledger.charge(_plan(3, ['a', 'd']))
    assert ledger.rounds == 2  # Nothing recorded.
    ledger.charge(_plan(3, ['d']))
    ledger.charge(_plan(4, ['a', 'b', 'c']))  # A new tree.


def test_epochs_of_the_population_give_each_client_at_most_one_round_per_epoch(skewed_digits):
    select = simulation.ClientSelector(skewed_digits.train, clients_per_round=2, epochs=1,
                                       batch_size=8, seed=3, sampling='epochs')
    assert select.rounds_per_epoch == 3  # 6 clients.
    epochs = [[select.plan(r).selected for r in range(1 + 3 * e, 4 + 3 * e)] for e in range(3)]
    for rounds in epochs:
        ids = [c for selected in rounds for c in selected]
        assert sorted(ids) == sorted(skewed_digits.train.client_ids)  # Each exactly once.
    assert epochs[0] != epochs[1]  # A new order each epoch, seeded:
    again = simulation.ClientSelector(skewed_digits.train, clients_per_round=2, epochs=1,
                                      batch_size=8, seed=3, sampling='epochs')
    assert [again.plan(r).selected for r in range(1, 4)] == epochs[0]


def _ftrlm_plainly(w0, grads, lr, rho, period):
    """google-research/federated dp_ftrl's DPFTRLMServerOptimizer, noise already in `grads`."""
    w, out = w0.copy(), []
    for t, g in enumerate(grads):
        if t % period == 0:
            start, total, buffer = w.copy(), np.zeros_like(w), np.zeros_like(w)
        total = total + g
        buffer = rho * buffer + total
        w = start - lr * buffer
        out.append(w.copy())
    return out


def test_ftrlm_steps_as_the_papers_rule_with_restarts():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=5).astype(np.float32)
    grads = [rng.normal(size=5).astype(np.float32) for _ in range(9)]
    optimizer = FtrlmOptimizer(0.3, 0.9, restart_period=4)
    state = optimizer.initialize([tf.TensorSpec([5], tf.float32)])
    weights = [tf.constant(w0)]
    for g, expected in zip(grads, _ftrlm_plainly(w0, grads, 0.3, 0.9, 4)):
        state, weights = optimizer.next(state, weights, [tf.constant(g)])
        np.testing.assert_allclose(weights[0].numpy(), expected, atol=1e-5)
    # At momentum 0 it is SGD on the updates.
    sgd = FtrlmOptimizer(0.3, 0.0, restart_period=4)
    state, weights = sgd.initialize([tf.TensorSpec([5], tf.float32)]), [tf.constant(w0)]
    for g in grads:
        state, weights = sgd.next(state, weights, [tf.constant(g)])
    np.testing.assert_allclose(weights[0].numpy(), w0 - 0.3 * np.sum(grads, axis=0), atol=1e-5)


def _rounds(process, select, rounds=3):
    state = process.initialize()
    for r in range(1, rounds + 1):
        state = process.next(state, [select.client_round(t) for t in select(r)]).state
    return process.get_model_weights(state).trainable


def test_without_noise_the_tree_aggregator_is_dp_fedavgs_clipped_mean(tff_runtime, skewed_digits,
                                                                       model_fn):
    select = simulation.ClientSelector(skewed_digits.train, clients_per_round=2, epochs=1,
                                       batch_size=8, seed=3, sampling='epochs')
    client = tff.learning.optimizers.build_sgdm(0.05)
    fixed = build_fedavg(model_fn, client_optimizer=client, model_aggregator=(
        aggregators.build_dp_aggregator('fixed', noise_multiplier=0.0, clients_per_round=2,
                                        clip=0.05)))
    ftrl = build_fedavg(model_fn, client_optimizer=client, model_aggregator=(
        tree.TreeAggregationFactory(noise_multiplier=0.0, clients_per_round=2, clip=0.05,
                                    restart_period=3, seed=0)))
    a, b = _rounds(fixed, select, 4), _rounds(ftrl, select, 4)  # Across a restart.
    assert max_abs_diff(a, b) <= 1e-6
    noisy = [_rounds(build_fedavg(model_fn, client_optimizer=client, model_aggregator=(
        tree.TreeAggregationFactory(noise_multiplier=1.0, clients_per_round=2, clip=0.05,
                                    restart_period=3, seed=seed))), select, 2) for seed in (0, 0, 1)]
    assert max_abs_diff(noisy[0], noisy[1]) == 0.0  # Seeded.
    assert max_abs_diff(noisy[0], noisy[2]) > 1e-3
    assert max_abs_diff(noisy[0], b) > 1e-3


BASE = dict(dataset='digits', model='logreg', num_clients=10, clients_per_round=2,
            client_weighting='uniform', dp='tree', noise_multiplier=1.0, clip=0.5,
            client_sampling='epochs', server_optimizer='ftrlm', server_learning_rate=0.5)


@pytest.mark.parametrize('change,flag', [
    (dict(client_sampling='uniform'), 'client_sampling'),
    (dict(dp='fixed', server_optimizer='sgd'), 'client_sampling'),
    (dict(server_optimizer='adam'), 'server_optimizer'),
    (dict(tree_restart=3), 'tree_restart'),
    (dict(algorithm='fedbuff'), 'client_sampling'),  # Asynchronous arrival has no epochs.
])
def test_settings_dp_ftrl_cannot_use_name_the_flag(change, flag):
    ExperimentConfig(**BASE).validate()
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(**{**BASE, **change}).validate()
    assert e.value.name == flag, str(e.value)


def test_asynchronous_algorithms_refuse_epochs_of_the_population():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(algorithm='fedbuff', client_sampling='epochs').validate()
    assert e.value.name == 'client_sampling' and 'slots free up' in str(e.value)


def test_a_dp_ftrl_run_reports_its_tree_guarantee(tff_runtime, tmp_path):
    config = ExperimentConfig(**BASE, rounds=7, eval_every=7, tree_restart=5,
                              output_dir=str(tmp_path)).validate()
    result = experiment.run_experiment(config, log=lambda line: None)
    privacy = result.summary['privacy']
    assert privacy['rounds_per_tree'] == 5 and privacy['rounds'] == 7
    assert privacy['epsilon'] == pytest.approx(_dp_accounting_epsilon(1.0, 5, 7, 1e-5), abs=1e-6)
    assert 'assumes no sampling or shuffling' in privacy['statement']
    assert result.summary['final_test_accuracy'] > 0.1


def test_the_privacy_calculator_in_tree_mode_equals_the_ledger_of_a_run():
    """`experiments.privacy_calculator --dp=tree`: the ε the run's ledger charges for the same
    population, cohort, restarts and rounds (each client once per epoch), and the noise a
    target ε needs."""
    from fl_tff.privacy import calculator
    population, cohort, restart, rounds, z = 40, 4, 5, 23, 1.2
    ledger = tree.TreeLedger(z, restart, 1e-5, rounds_per_epoch=10)
    for r in range(1, rounds + 1):
        ledger.charge(_plan(r, [f'c{(4 * (r - 1) + i) % 40}' for i in range(4)]))
    result = calculator.calculate_tree(noise_multiplier=z, rounds=rounds, delta=1e-5,
                                       population=population, cohort=cohort,
                                       tree_restart=restart)
    assert result['epsilon_rdp'] == pytest.approx(ledger.spent(), abs=1e-9)
    assert result['epsilon_rdp'] == pytest.approx(
        _dp_accounting_epsilon(z, restart, rounds, 1e-5, 10), abs=1e-6)
    solved = calculator.calculate_tree(noise_multiplier=0, rounds=rounds, delta=1e-5,
                                       population=population, cohort=cohort,
                                       tree_restart=restart, target_epsilon=result['epsilon_rdp'])
    assert solved['noise_multiplier'] == pytest.approx(z, rel=1e-3)
    assert 'tree aggregation (DP-FTRL), 4 of 40 clients' in calculator.format_result(result, False)
    with pytest.raises(calculator.CalculatorError, match='--tree_restart: must divide the epoch '
                                                         'of 10 rounds'):
        calculator.calculate_tree(noise_multiplier=1, rounds=5, delta=1e-5, population=40,
                                  cohort=4, tree_restart=3)
