"""The ledger charges the rounds actually planned and stops before the budget is exceeded."""

import dataclasses
import math

import dp_accounting
import pytest

from fl_tff.config import ExperimentConfig
from fl_tff.privacy import dp_options
from fl_tff.privacy.accounting import SampledGaussian
from fl_tff.privacy.ledger import (BudgetExhausted, ExampleLevelLedger, ParticipationLedger,
                                  PrivacyLedger)
from fl_tff.rounds import RoundPlan


def _plan(r, participants):
    return RoundPlan(r, tuple(c for c, _ in participants), tuple(participants))


def test_user_level_ledger_reports_epsilon_so_far_and_stops_before_the_target():
    mechanism = SampledGaussian(1.0, 'poisson', q=0.1)
    ledger = PrivacyLedger(mechanism, 1e-5, target_epsilon=mechanism.epsilon(3, 1e-5) + 1e-9)
    for r in (1, 2, 3):
        row = ledger.charge(_plan(r, [('a', 1)]), pld=r == 3)
        assert row['epsilon'] == pytest.approx(mechanism.epsilon(r, 1e-5), abs=1e-9)
    assert row['epsilon_pld'] == pytest.approx(mechanism.epsilon(3, 1e-5, 'pld'), abs=1e-9)
    with pytest.raises(BudgetExhausted, match=r'stopped before round 4: it would raise user-level '
                                              r'epsilon to .* > --target_epsilon'):
        ledger.charge(_plan(4, [('a', 1)]))
    assert ledger.rounds == 3  # Nothing recorded for the refused round.
    summary = ledger.summary()
    assert summary['level'] == 'user' and 'Poisson sampling of clients with rate q = 0.1' in summary['statement']


def test_example_level_ledger_charges_each_client_its_own_steps():
    ledger = ExampleLevelLedger(1.0, batch_size=10, client_sizes={'a': 25, 'b': 100}, delta=1e-5)
    row = ledger.charge(_plan(1, [('a', 2), ('b', 1)]))
    assert ledger.steps == {'a': 6, 'b': 10}  # 2 x ceil(25/10), 1 x ceil(100/10)
    eps_a = SampledGaussian(1.0, 'poisson', q=0.4).epsilon(6, 1e-5)
    eps_b = SampledGaussian(1.0, 'poisson', q=0.1).epsilon(10, 1e-5)
    assert row['epsilon'] == pytest.approx(max(eps_a, eps_b), abs=1e-9)
    ledger.charge(_plan(2, [('b', 1)]))
    assert ledger.steps == {'a': 6, 'b': 20}
    assert ledger.summary()['epsilon_per_client']['a'] == pytest.approx(eps_a, abs=1e-9)
    assert 'example-level' in ledger.statement()


def test_bad_ledger_values():
    with pytest.raises(ValueError, match=r'delta must be in \(0, 1\)'):
        PrivacyLedger(SampledGaussian(1.0, 'poisson', q=0.1), 0.0)
    assert math.isinf(PrivacyLedger(SampledGaussian(0.0, 'poisson', q=0.1), 1e-5).epsilon(1))


def _gaussians_epsilon(z, sensitivities, delta, pld=False):
    """dp_accounting directly: one Gaussian mechanism of noise z (in units of the clip) per
    sensitivity (in clips) in the list, composed; add or remove one."""
    accountant = (dp_accounting.pld.PLDAccountant() if pld else dp_accounting.rdp.RdpAccountant())
    for s in sensitivities:
        accountant.compose(dp_accounting.GaussianDpEvent(z / s))
    return accountant.get_epsilon(delta)


def test_asynchronous_ledger_composes_one_gaussian_per_server_update_of_the_busiest_client():
    # 'a' sends twice into update 3 (a fast client): sensitivity 2C there.
    updates = [[('a', 1), ('b', 1)], [('a', 1), ('c', 1)], [('a', 1), ('a', 1)], [('b', 1), ('d', 1)],
               [('b', 1), ('d', 1)], [('c', 1), ('a', 1)]]
    spent_by_a = [1, 1, 2]  # Sensitivities of a's mechanisms after update 3: the busiest.
    ledger = ParticipationLedger(2.0, 1e-5,
                                 target_epsilon=_gaussians_epsilon(2.0, spent_by_a, 1e-5) + 1e-9)
    expected = [[1], [1, 1], [1, 1, 2], [1, 1, 2], [1, 1, 2]]
    for n, participants in enumerate(updates[:5], start=1):
        row = ledger.charge(_plan(n, participants), pld=n == 3)
        assert row['epsilon'] == pytest.approx(_gaussians_epsilon(2.0, expected[n - 1], 1e-5),
                                               rel=1e-9)
    assert row['max_participations'] == 4  # a: 1 + 1 + 2 updates.
    # b has taken part 3 times with sensitivity C (1 + 1 + 1 < 1 + 1 + 4): within budget; a's
    # next update is not.
    assert ledger.spent() == pytest.approx(_gaussians_epsilon(2.0, spent_by_a, 1e-5), rel=1e-9)
    with pytest.raises(BudgetExhausted, match='stopped before round 6'):
        ledger.charge(_plan(6, updates[5]))
    assert ledger.summary()['max_participations'] == 4
    assert 'no sampling assumed' in ledger.statement()
    fresh = ParticipationLedger(2.0, 1e-5)
    for n, participants in enumerate(updates[:3], start=1):
        fresh.charge(_plan(n, participants))
    assert fresh.pld_columns()['epsilon_pld'] == pytest.approx(
        _gaussians_epsilon(2.0, spent_by_a, 1e-5, pld=True), rel=1e-6)


def test_an_asynchronous_run_gets_the_participation_ledger():
    config = ExperimentConfig(algorithm='fedbuff', dp='fixed', client_weighting='uniform',
                              noise_multiplier=1.5)
    ledger = dp_options.user_level_ledger(config, None, config.noise_multiplier)
    assert isinstance(ledger, ParticipationLedger) and ledger.mechanism.noise_multiplier == 1.5


class _Sampling:
    """What the user-level ledger reads of a client selector."""

    def __init__(self, sampling, population, cohort):
        self.sampling, self.population, self.cohort = sampling, population, cohort


@pytest.mark.parametrize('algorithm', ['scaffold', 'mimelite'])
@pytest.mark.parametrize('pld', [False, True])
def test_scaffolds_two_uploads_are_two_gaussian_releases_a_round(pld, algorithm):
    """SCAFFOLD under user-level DP releases each client's model delta and its dc_i (MIME-lite:
    its delta and its full-batch gradient), each clipped to C with noise z C: with every client
    in every round (q = 1), R rounds are 2R Gaussian mechanisms, composed by dp_accounting
    directly."""
    z, delta, rounds = 1.5, 1e-5, 5
    everyone = _Sampling('poisson', 10, 10)  # q = 1: Poisson sampling of everyone.
    scaffold = ExperimentConfig(algorithm=algorithm, dp='fixed', client_weighting='uniform',
                                noise_multiplier=z, delta=delta)
    fedavg = dataclasses.replace(scaffold, algorithm='fedavg')
    accountant = 'pld' if pld else 'rdp'
    assert dp_options.user_level_ledger(scaffold, everyone, z).epsilon(rounds, accountant) == \
        pytest.approx(_gaussians_epsilon(z, [1.0] * 2 * rounds, delta, pld=pld), rel=1e-6)
    assert dp_options.user_level_ledger(fedavg, everyone, z).epsilon(rounds, accountant) == \
        pytest.approx(_gaussians_epsilon(z, [1.0] * rounds, delta, pld=pld), rel=1e-6)
