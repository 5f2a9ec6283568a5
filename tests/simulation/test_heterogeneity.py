"""Stragglers, dropouts and over-selection: seeded, with the documented counts."""

import pytest

from fl_tff import models, simulation
from fl_tff.algorithms import build_fedprox
from fl_tff.simulation.heterogeneity import STRAGGLER_POLICIES, DeviceHeterogeneity, plan_round
from tests.helpers import plan_rounds, to_batches, valid_choices

IDS = [f'client_{i:05d}' for i in range(40)]
SIZES = {cid: 10 + 7 * i for i, cid in enumerate(IDS)}


def _plan(round_num=1, k=10, epochs=20, selected=None, **h):
    return plan_round(round_num, selected or IDS[:k], clients_per_round=k, epochs=epochs,
                      heterogeneity=DeviceHeterogeneity(**h), seed=3, client_sizes=SIZES)


def test_ideal_devices_all_participate_with_full_epochs():
    plan = _plan()
    assert plan.participants == tuple((cid, 20) for cid in IDS[:10])
    assert plan.counts() == {'selected': 10, 'aggregated': 10, 'dropped': 0, 'stragglers': 0,
                             'partial': 0, 'late': 0}


def test_stragglers_are_a_fixed_fraction_and_policy_decides_their_fate():
    partial = _plan(straggler_fraction=0.9, straggler_policy='partial')
    drop = _plan(straggler_fraction=0.9, straggler_policy='drop')
    assert partial.stragglers == drop.stragglers == 9
    assert partial.partial == 9 and len(partial.participants) == 10
    assert sorted(e for _, e in partial.participants) [-1] == 20  # the one non-straggler
    assert all(1 <= e < 20 for _, e in partial.participants if e != 20)
    assert len(drop.participants) == 1 and drop.participants[0][1] == 20
    # Same seed and round: the same plan; another round: another draw.
    assert _plan(straggler_fraction=0.9, straggler_policy='partial') == partial
    assert _plan(round_num=2, straggler_fraction=0.9, straggler_policy='partial') != partial


def test_dropout_rate_matches_over_many_rounds_and_each_dropout_has_one_drop_point():
    """A rate r of the selected clients drop, each at one point drawn uniformly: before
    training or before its upload (it returns nothing: 2r/3), or after its upload (its
    update counts)."""
    plans = [_plan(round_num=r, dropout_rate=0.3) for r in range(1, 301)]
    points = [p for plan in plans for _, p in plan.drop_points]
    assert len(points) / 3000 == pytest.approx(0.3, abs=0.03)
    for point in ('before_training', 'before_upload', 'after_upload'):
        assert points.count(point) / len(points) == pytest.approx(1 / 3, abs=0.05)
    for plan in plans:
        arrived = {c for c, _ in plan.participants}
        for client, point in plan.drop_points:
            assert (client in arrived) == (point == 'after_upload')
        assert plan.dropped == sum(p != 'after_upload' for _, p in plan.drop_points)
        assert len(arrived) == 10 - plan.dropped
    # The drop points leave every other draw of the plan as it was.
    with_drops = _plan(round_num=7, dropout_rate=0.3, straggler_fraction=0.5)
    assert with_drops.stragglers == _plan(round_num=7, straggler_fraction=0.5).stragglers == 5


def test_over_selection_samples_more_and_keeps_the_first_k_to_finish():
    assert simulation.heterogeneity.selection_size(10, 0.3) == 13
    plan = _plan(selected=IDS[:13], over_selection=0.3)
    assert plan.counts()['selected'] == 13 and len(plan.participants) == 10 and plan.late == 3
    finish = {cid: SIZES[cid] * simulation.heterogeneity._slowness(3, cid) for cid in IDS[:13]}
    fastest = sorted(IDS[:13], key=lambda c: finish[c])[:10]
    assert sorted(cid for cid, _ in plan.participants) == sorted(fastest)


@pytest.mark.parametrize('kwargs,epochs,match', [
    ({'straggler_fraction': 1.5}, 5, r'straggler_fraction must be in \[0, 1\]'),
    ({'straggler_fraction': 0.5}, 1, 'need E >= 2'),
    ({'straggler_policy': 'wait'}, 5, "unknown straggler_policy 'wait'; valid choices: "
     + valid_choices(STRAGGLER_POLICIES)),
    ({'dropout_rate': 1.0}, 5, r'dropout_rate must be in \[0, 1\)'),
    ({'over_selection': -0.1}, 5, 'over_selection must be >= 0'),
])
def test_bad_settings_raise(kwargs, epochs, match):
    with pytest.raises(ValueError, match=match):
        DeviceHeterogeneity(**kwargs).validate(epochs)


def test_partial_stragglers_get_fewer_local_epochs_and_the_loop_reports_counts(tff_runtime, skewed_digits):
    selector = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=4, epochs=4, batch_size=1000, seed=1,
        heterogeneity=DeviceHeterogeneity(straggler_fraction=0.5, straggler_policy='partial'))
    plan = selector.plan(1)
    for (cid, epochs), ds in zip(plan.participants, plan_rounds(selector, plan)):
        n = skewed_digits.train_sizes[cid]
        assert sum(int(b['y'].shape[0]) for b in to_batches(ds)) == epochs * n
    model_fn, _ = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10)
    process = simulation.compose(build_fedprox(model_fn, mu=0.1), selector.dataset_computation())
    _, history = simulation.run_training(process, selector, rounds=2)
    assert all(row['stragglers'] == 2 and row['partial'] == 2 and row['aggregated'] == 4
               for row in history)
