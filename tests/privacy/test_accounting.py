"""ε matches dp_accounting for the same event, and the calculator reports it."""

import math
import subprocess
import sys

import dp_accounting
import pytest

from fl_tff.privacy import calculator
from fl_tff.privacy.accounting import SampledGaussian, noise_for_epsilon


def _direct_rdp(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, delta=1e-5):
    return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation).compose(event).get_epsilon(delta)


def test_poisson_epsilon_equals_dp_accounting_and_the_reference_value():
    m = SampledGaussian(1.1, 'poisson', q=0.01)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 6000)
    assert m.epsilon(6000, 1e-5) == pytest.approx(_direct_rdp(event), abs=1e-6)
    assert m.epsilon(6000, 1e-5) == pytest.approx(4.247, abs=1e-3)
    pld = dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(1e-5)
    assert m.epsilon(6000, 1e-5, 'pld') == pytest.approx(pld, abs=1e-6)
    assert m.epsilon(6000, 1e-5, 'pld') == pytest.approx(3.900, abs=1e-3)


def test_second_reference_value():
    m = SampledGaussian(1.0, 'poisson', q=5000 / 763430)
    assert m.epsilon(2000, 1e-9) == pytest.approx(3.012, abs=1e-3)
    assert m.epsilon(2000, 1e-9, 'pld') == pytest.approx(2.588, abs=1e-3)


def test_fixed_size_sampling_uses_the_without_replacement_event_and_replace_one():
    m = SampledGaussian.from_cohort(1.0, 'uniform', population=300, cohort=30)
    # Replacing one client moves the clipped sum by up to 2C: the event's multiplier is z / 2.
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        300, 30, dp_accounting.GaussianDpEvent(0.5)), 100)
    assert m.epsilon(100, 1e-5) == pytest.approx(
        _direct_rdp(event, dp_accounting.NeighboringRelation.REPLACE_ONE), abs=1e-6)
    with pytest.raises(ValueError, match='PLD accountant supports Poisson sampling only'):
        m.epsilon(100, 1e-5, 'pld')


def test_edge_cases_and_bad_values():
    m = SampledGaussian(1.0, 'poisson', q=0.1)
    assert m.epsilon(0, 1e-5) == 0.0
    assert math.isinf(SampledGaussian(0.0, 'poisson', q=0.1).epsilon(1, 1e-5))
    assert m.epsilon(10, 1e-5) < m.epsilon(20, 1e-5)
    for delta in (0.0, 1.0, -1e-5):
        with pytest.raises(ValueError, match=r'delta must be in \(0, 1\)'):
            m.epsilon(10, delta)
    with pytest.raises(ValueError, match='noise multiplier must be >= 0'):
        SampledGaussian(-1.0, 'poisson', q=0.1)


def test_noise_for_epsilon_inverts_epsilon():
    z = noise_for_epsilon(4.247, 1e-5, 6000, 'poisson', q=0.01)
    assert z == pytest.approx(1.1, abs=2e-3)
    assert SampledGaussian(z, 'poisson', q=0.01).epsilon(6000, 1e-5) <= 4.247 + 1e-6


def test_calculator_command_prints_epsilon_and_rejects_bad_flags():
    cmd = [sys.executable, '-m', 'experiments.privacy_calculator', '--q=0.01',
           '--noise_multiplier=1.1', '--rounds=6000', '--delta=1e-5']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'epsilon = 4.2466 (RDP)' in out.stdout
    assert 'epsilon = 3.8998 (PLD)' in out.stdout
    bad = subprocess.run([*cmd[:3], '--q=0.01', '--delta=1.5'], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == 'error: --delta: delta must be in (0, 1), got 1.5'


def test_calculator_solves_for_noise():
    result = calculator.calculate(noise_multiplier=0, rounds=500, delta=1e-4, sampling='uniform',
                                  population=1000, cohort=50, target_epsilon=3.0)
    assert result['epsilon_rdp'] == pytest.approx(3.0, abs=1e-3) and result['noise_multiplier'] > 1
    with pytest.raises(calculator.CalculatorError, match='--population and --cohort'):
        calculator.calculate(noise_multiplier=1, rounds=10, delta=1e-5, sampling='uniform', q=0.1)


def test_pld_falls_back_to_a_coarser_grid_where_dp_accounting_fails_at_small_noise(monkeypatch):
    """dp_accounting's PLD raises "deltas are not in non-increasing order" at z = 0.0707 on its
    default grid (1e-4; seen in a run's summary). It takes 15 s to fail there (and 4 s to
    succeed on 1e-3), so here the failure is dp_accounting's own ValueError raised on the finer
    grids and the coarse grid is 1e-2: the ledger reports dp_accounting's value on the first
    grid that works (a coarser grid is still a pessimistic bound), below the RDP bound."""
    import fl_tff.privacy.accounting as accounting
    z, q, rounds, delta = 0.0707, 0.5, 1, 1e-5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    tried = []
    real_pld = accounting._poisson_gaussian_pld

    def failing_on_fine_grids(noise_multiplier, q, interval):
        tried.append(interval)
        if interval < 1e-2:
            raise ValueError('deltas are not in non-increasing order')
        return real_pld(noise_multiplier, q, interval)

    monkeypatch.setattr(accounting, 'PLD_DISCRETIZATIONS', (1e-4, 1e-3, 1e-2))
    monkeypatch.setattr(accounting, '_poisson_gaussian_pld', failing_on_fine_grids)
    pld = SampledGaussian(z, 'poisson', q=q).epsilon(rounds, delta, 'pld')
    assert tried == [1e-4, 1e-3, 1e-2]
    coarse = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-2).compose(event)
    assert pld == pytest.approx(coarse.get_epsilon(delta), rel=1e-9)
    assert pld < SampledGaussian(z, 'poisson', q=q).epsilon(rounds, delta, 'rdp')


def test_pld_epsilon_after_each_round_is_dp_accountings_and_builds_the_round_once(monkeypatch):
    """A run asks for ε after every round: the one-round PLD is built once per (z, q, grid),
    and ε after n rounds is exactly what dp_accounting's PLD accountant gives for n rounds."""
    import fl_tff.privacy.accounting as accounting
    z, q, delta = 0.9, 0.05, 1e-5
    built = []
    real_pld = accounting.pld_lib.from_gaussian_mechanism
    accounting._pld_or_error.cache_clear()
    monkeypatch.setattr(accounting.pld_lib, 'from_gaussian_mechanism',
                        lambda **kw: built.append(kw) or real_pld(**kw))
    mechanism = SampledGaussian(z, 'poisson', q=q)
    for rounds in (1, 2, 7):
        expected = dp_accounting.pld.PLDAccountant().compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                rounds)).get_epsilon(delta)
        assert mechanism.epsilon(rounds, delta, 'pld') == expected
    assert len(built) == 4  # Three by dp_accounting's accountant above, one by ours.


def test_a_grid_dp_accounting_fails_on_is_tried_once_per_process(monkeypatch):
    """dp_accounting's failure on a fine grid costs seconds: a run asking for ε every round
    tries that grid once, then goes straight to the coarser one (same value each time)."""
    import fl_tff.privacy.accounting as accounting
    real_pld = accounting.pld_lib.from_gaussian_mechanism
    tried = []

    def failing_on_the_finest(**kw):
        tried.append(kw['value_discretization_interval'])
        if kw['value_discretization_interval'] < 1e-3:
            raise ValueError('deltas are not in non-increasing order')
        return real_pld(**kw)

    accounting._pld_or_error.cache_clear()
    monkeypatch.setattr(accounting.pld_lib, 'from_gaussian_mechanism', failing_on_the_finest)
    mechanism = SampledGaussian(1.1, 'poisson', q=0.1)
    first, again = (mechanism.epsilon(rounds, 1e-5, 'pld') for rounds in (3, 3))
    assert first == again and tried == [1e-4, 1e-3]
    expected = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3).compose(
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            0.1, dp_accounting.GaussianDpEvent(1.1)), 3)).get_epsilon(1e-5)
    assert first == expected
