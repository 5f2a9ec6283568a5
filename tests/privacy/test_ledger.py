"""The ledger charges the rounds actually planned and stops before the budget is exceeded."""

import math

import pytest

from fl_tff.privacy.accounting import SampledGaussian
from fl_tff.privacy.ledger import BudgetExhausted, ExampleLevelLedger, PrivacyLedger
from fl_tff.simulation.heterogeneity import RoundPlan


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
