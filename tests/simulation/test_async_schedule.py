"""The asynchronous schedule against hand-built timelines: event order, staleness, losses."""


import pytest

from fl_tff.simulation import devices
from fl_tff.simulation.async_schedule import AsyncSelector, VersionStore


class _Draws:
    """A stand-in for `ClientSelector`: fixed draws, so a timeline can be worked out by hand."""

    def __init__(self, client_ids, draws, epochs=1):
        self.client_ids, self._draws, self.epochs = list(client_ids), draws, epochs

    @property
    def population(self):
        return len(self.client_ids)

    def sample(self, draw, size):
        assert size == len(self._draws[0])
        return self._draws[(draw - 1) % len(self._draws)]

    def task(self, client_id, epochs, round_num):
        return (client_id, epochs, round_num)


def _clock(seconds, profiles=None):
    """Each client's task takes `seconds[cid]` (1 example at that many seconds, no transfers)."""
    profiles = profiles or {}
    return devices.TaskClock(
        {cid: profiles.get(cid, devices.DeviceProfile(s)) for cid, s in seconds.items()},
        {cid: 1 for cid in seconds}, download_bytes=0, upload_bytes=0)


DRAWS = [['a', 'b'], ['c', 'a'], ['b', 'c']]


def test_three_client_timeline_gives_the_staleness_the_clock_implies():
    # a takes 1 s, b 3 s, c 2 s; two train at once; every arrival is a server update.
    # t=0: a, b start from v0. t=1: a arrives -> update 1 (staleness 0); c starts from v1.
    # t=3: b then c arrive (start order) -> update 2 (b: 1 - 0 = 1), update 3 (c: 2 - 1 = 1);
    # then a (draw 2) and b (draw 3) start from v3. t=4: a -> update 4 (0); c starts from v4.
    # t=6: b -> update 5 (4 - 3 = 1), c -> update 6 (5 - 4 = 1).
    select = AsyncSelector(_Draws('abc', DRAWS), _clock({'a': 1.0, 'b': 3.0, 'c': 2.0}),
                           concurrency=2, buffer_size=1)
    plans = [select.plan(n) for n in range(1, 7)]
    assert [p.participants[0][0] for p in plans] == ['a', 'b', 'c', 'a', 'b', 'c']
    assert [p.staleness for p in plans] == [[0], [1], [1], [0], [1], [1]]
    assert [p.start_versions for p in plans] == [(0,), (0,), (1,), (3,), (3,), (4,)]
    assert [p.sim_time for p in plans] == [1.0, 3.0, 3.0, 4.0, 6.0, 6.0]
    assert [p.selected for p in plans] == [('a', 'b'), ('c',), (), ('a', 'b'), ('c',), ()]
    assert plans[0].live_versions == (0, 1)  # b still trains from v0.
    assert [p.draws for p in plans] == [(1,), (1,), (2,), (2,), (3,), (3,)]
    assert select.client_inputs(plans[2]) == [('c', 1, 2)]  # The task of its draw's round.
    assert select.participation(6) == {'a': 2, 'b': 2, 'c': 2}


def test_a_client_that_goes_offline_is_lost_and_replaced():
    # b is online in [0, 2) and [5, 10) of a 10 s cycle: its 3 s task started at 0 is lost at 2.
    # t=1: a -> update 1; c starts (v1, ends 3). t=2: b lost; a (draw 2) starts (v1, ends 3).
    # t=3: c then a -> update 2 (c: 0), update 3 (a: 2 - 1 = 1).
    b = devices.DeviceProfile(3.0, period=10.0, windows=((0.0, 2.0), (5.0, 10.0)))
    select = AsyncSelector(_Draws('abc', DRAWS), _clock({'a': 1.0, 'b': 3.0, 'c': 2.0}, {'b': b}),
                           concurrency=2, buffer_size=1)
    plans = [select.plan(n) for n in range(1, 4)]
    assert [p.participants[0][0] for p in plans] == ['a', 'c', 'a']
    assert [p.staleness for p in plans] == [[0], [0], [1]]
    assert [p.lost for p in plans] == [0, 1, 0]
    assert plans[1].selected == ('c', 'a')


def test_a_buffer_waits_for_k_updates_and_the_schedule_replays():
    select = AsyncSelector(_Draws('abc', DRAWS), _clock({'a': 1.0, 'b': 3.0, 'c': 2.0}),
                           concurrency=2, buffer_size=2)
    first = [select.plan(n) for n in range(1, 5)]
    # t=1: a buffered, c starts from v0. t=3: b, c arrive -> b fills the buffer with a.
    assert first[0].participants == (('a', 1), ('b', 1)) and first[0].sim_time == 3.0
    again = AsyncSelector(_Draws('abc', DRAWS), _clock({'a': 1.0, 'b': 3.0, 'c': 2.0}),
                          concurrency=2, buffer_size=2)
    assert [again.plan(n) for n in (4, 1, 2, 3)] == [first[3], *first[:3]]


def test_identical_devices_and_workloads_make_buffers_of_whole_cohorts():
    # C = K: everyone finishes together, so each update is one draw: synchronous rounds.
    ids = [f'c{i}' for i in range(6)]
    draws = [ids[:3], ids[3:], ids[1:4]]
    select = AsyncSelector(_Draws(ids, draws), _clock({c: 2.0 for c in ids}), concurrency=3,
                           buffer_size=3)
    for n, cohort in enumerate(draws, start=1):
        plan = select.plan(n)
        assert [c for c, _ in plan.participants] == cohort
        assert plan.staleness == [0, 0, 0] and plan.sim_time == 2.0 * n


def test_dropouts_are_lost_and_every_started_task_is_accounted_for():
    ids = [f'c{i}' for i in range(8)]
    draws = [ids[:4], ids[4:], ids[2:6]]
    speeds = {c: 1.0 + i for i, c in enumerate(ids)}
    select = AsyncSelector(_Draws(ids, draws), _clock(speeds), concurrency=4, buffer_size=2,
                           dropout_rate=0.5, seed=3)
    plans = [select.plan(n) for n in range(1, 21)]
    started = sum(len(p.selected) for p in plans)
    lost = sum(p.lost for p in plans)
    aggregated = sum(len(p.participants) for p in plans)
    # Each started task is lost, aggregated, or still in flight at the last update.
    assert started == lost + aggregated + plans[-1].in_flight
    assert 0.25 < lost / (lost + aggregated) < 0.75


def test_bad_concurrency_and_buffer():
    base = _Draws('abc', DRAWS)
    with pytest.raises(ValueError, match='concurrency'):
        AsyncSelector(base, _clock({'a': 1, 'b': 1, 'c': 1}), concurrency=4, buffer_size=1)
    with pytest.raises(ValueError, match='buffer_size'):
        AsyncSelector(base, _clock({'a': 1, 'b': 1, 'c': 1}), concurrency=2, buffer_size=3)


def test_version_store_keeps_what_is_live_and_round_trips(tmp_path):
    import numpy as np
    import tensorflow_federated as tff
    w = lambda x: tff.learning.models.ModelWeights([np.full(2, x, np.float32)], [np.ones(1)])
    store = VersionStore(w(0.0))
    store.put(1, w(1.0), keep=(0, 1))
    store.put(2, w(2.0), keep=(1, 2))
    assert store.versions == [1, 2]
    path = str(tmp_path / 'v.npz')
    store.save_client_states(path)
    other = VersionStore(w(9.0))
    other.load_client_states(path)
    assert other.versions == [1, 2] and float(other.get(2).trainable[0][0]) == 2.0
    assert float(other.get(1).non_trainable[0][0]) == 1.0


def test_a_free_slot_is_filled_when_a_client_comes_online():
    # a is always online (10 s tasks); b only from t = 3 of each 100 s cycle (1 s tasks).
    # t=0: a starts, b is offline, one slot idles. t=3: b comes online and starts. t=4: b ->
    # update 1, 3 slot-seconds idle.
    b = devices.DeviceProfile(1.0, period=100.0, windows=((3.0, 100.0),))
    select = AsyncSelector(_Draws('ab', [['a', 'b'], ['b', 'a']]), _clock({'a': 10.0, 'b': 1.0},
                                                                          {'b': b}),
                           concurrency=2, buffer_size=1)
    first = select.plan(1)
    assert first.participants == (('b', 1),) and first.sim_time == 4.0
    assert first.idle_slot_seconds == 3.0 and first.selected == ('a', 'b')
