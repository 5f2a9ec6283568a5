"""The divergence rule on hand-made metrics rows."""

import math

import pytest

from fl_tff.runs.divergence import DivergenceError, DivergenceMonitor

INITIAL = math.log(10)  # A fresh 10-class classifier.


def _row(**values):
    return {'round': 4, 'clients': 5, 'train_loss': 1.0, **values}


@pytest.mark.parametrize('row,match', [
    (_row(train_loss=2.7e29), r'train_loss 2.7e\+29 exceeds --divergence_factor=10 x the initial loss 2.303'),
    (_row(global_train_loss=23.1), 'global_train_loss 23.1 exceeds'),
    (_row(train_loss=float('nan')), 'train_loss is nan'),
    (_row(test_loss=float('inf')), 'test_loss is inf'),
    (_row(server_update_skipped=1), 'the aggregated update was not finite'),
])
def test_diverged_rounds_are_named(row, match):
    with pytest.raises(DivergenceError, match=f'diverged at round 4: {match}') as e:
        DivergenceMonitor(INITIAL, 10).check(row)
    assert e.value.round_num == 4


@pytest.mark.parametrize('row', [
    _row(train_loss=22.9),                           # Below 10 x 2.303.
    _row(clients=0, train_loss=float('nan')),        # Every client dropped: no loss this round.
])
def test_healthy_rounds_pass(row):
    DivergenceMonitor(INITIAL, 10).check(row)


def test_factor_zero_only_stops_on_non_finite_values():
    off = DivergenceMonitor(INITIAL, 0)
    off.check(_row(train_loss=2.7e29))
    with pytest.raises(DivergenceError):
        off.check(_row(train_loss=float('inf')))
