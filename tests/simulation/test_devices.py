"""Device profiles and the simulated clock of synchronous rounds."""

import math

import numpy as np
import pytest

from fl_tff.simulation import devices
from fl_tff.simulation.heterogeneity import DeviceHeterogeneity, plan_round

IDS = [f'client_{i}' for i in range(40)]


def test_task_time_is_download_plus_compute_plus_upload():
    p = devices.DeviceProfile(0.02, downlink_bytes_per_second=1000.0, uplink_bytes_per_second=250.0)
    assert p.task_seconds(50, download_bytes=4000, upload_bytes=500) == pytest.approx(4 + 1 + 2)


def test_drawn_profiles_are_seeded_heavy_tailed_and_identical_at_sigma_zero():
    settings = devices.DeviceSettings(seconds_per_example=0.01, speed_sigma=1.0)
    a = devices.draw_profiles(settings, IDS, seed=5)
    assert a == devices.draw_profiles(settings, IDS, seed=5)
    speeds = np.array([p.seconds_per_example for p in a.values()])
    assert np.median(speeds) == pytest.approx(0.01, rel=0.6)
    assert speeds.max() / speeds.min() > 10  # LogNormal(0, 1): a wide spread over 40 devices.
    flat = devices.draw_profiles(devices.DeviceSettings(speed_sigma=0.0), IDS, seed=5)
    assert {p.seconds_per_example for p in flat.values()} == {0.01}
    assert {p.uplink_bytes_per_second for p in flat.values()} == {5e6 / 8}


def test_intermittent_clients_follow_their_cycle():
    settings = devices.DeviceSettings(intermittent_fraction=0.25, period_seconds=100.0,
                                      on_fraction=0.3)
    profiles = devices.draw_profiles(settings, IDS, seed=2)
    cycling = [p for p in profiles.values() if not p.always_online]
    assert len(cycling) == 10
    for p in cycling:
        online = np.mean([p.online(t) for t in np.arange(0, 100, 0.25)])
        assert online == pytest.approx(0.3, abs=0.01)
        t = next(t for t in np.arange(0, 100, 0.25) if p.online(t))
        end = p.online_until(t)
        assert not p.online(end) and p.online(math.nextafter(end, 0))


def test_drawn_windows_hold_in_late_cycles_and_full_windows_are_always_online():
    # Non-integer window ends far from cycle 0 (where float rounding bites).
    p = devices.DeviceProfile(1.0, period=3600.0, windows=((1234.567, 3017.891),))
    for k in (7, 1000, 123456):
        t = k * 3600.0 + 2000.0
        assert p.online(t) and p.online_until(t) == pytest.approx(k * 3600.0 + 3017.891)
        assert not p.online(k * 3600.0 + 3100.0)
        assert p.next_online(k * 3600.0 + 3100.0) == pytest.approx((k + 1) * 3600.0 + 1234.567)
    assert devices.DeviceProfile(1.0, period=10.0, windows=((0.0, 6.0), (4.0, 10.0))).always_online
    full = devices.draw_profiles(devices.DeviceSettings(intermittent_fraction=1.0, on_fraction=1.0),
                                 IDS[:5], seed=0)
    assert all(p.always_online and p.online_until(5e6) == math.inf for p in full.values())


def test_a_window_wrapping_the_cycle_chains():
    p = devices.DeviceProfile(1.0, period=10.0, windows=((0.0, 2.0), (8.0, 10.0)))
    assert p.online_until(9.0) == 12.0 and p.online_until(21.0) == 22.0
    assert not p.online(5.0) and p.online(19.5)


HEADER = (b'client_id,seconds_per_example,downlink_bytes_per_second,uplink_bytes_per_second,'
          b'availability\n')


def test_profiles_file(tmp_path):
    path = tmp_path / 'devices.csv'
    path.write_text('client_id,seconds_per_example,downlink_bytes_per_second,'
                    'uplink_bytes_per_second,availability\n'
                    'a,0.5,1000,0,always\nb,0.1,0,200,86400:28800-79200\n')
    profiles = devices.load_profiles(str(path), ['a', 'b'])
    assert profiles['a'].uplink_bytes_per_second == math.inf and profiles['a'].always_online
    assert profiles['b'].online(9 * 3600) and not profiles['b'].online(23 * 3600)
    with pytest.raises(devices.DeviceProfileError, match="no profile for 1 clients, e.g. 'c'"):
        devices.load_profiles(str(path), ['a', 'b', 'c'])
    bad = tmp_path / 'bad.csv'
    bad.write_text('client_id,seconds_per_example\na,1\n')
    with pytest.raises(devices.DeviceProfileError, match='missing: downlink_bytes_per_second'):
        devices.load_profiles(str(bad), ['a'])
    bad.write_text(path.read_text().replace('86400:28800-79200', '100:50-20'))
    with pytest.raises(devices.DeviceProfileError, match='line 3'):
        devices.load_profiles(str(bad), ['a'])


@pytest.mark.parametrize('content,message', [
    (b'client_id,seconds_per_example\n\xff\xfe,1\n', r"is not UTF-8 text \(byte 30: invalid start byte\); give a CSV file"),
    (HEADER + b'a,0.5,0,0,always\nb,0.1,0,0,always\na,9.0,0,0,always\n',
     r"line 4: a second row for client 'a' \(the first is line 2\)"),
    (HEADER + b'a,0.5,0,0,always\nb,0.1\n',
     'line 3 is cut short: no value for downlink_bytes_per_second, uplink_bytes_per_second, '
     'availability'),
])
def test_a_profiles_file_that_is_not_text_repeats_a_client_or_cuts_a_row_is_one_error(
        tmp_path, content, message):
    path = tmp_path / 'devices.csv'
    path.write_bytes(content)
    with pytest.raises(devices.DeviceProfileError, match=message):
        devices.load_profiles(str(path), ['a', 'b'])


def _clock(seconds, profiles=None):
    profiles = profiles or {}
    return devices.TaskClock({c: profiles.get(c, devices.DeviceProfile(s))
                              for c, s in seconds.items()}, {c: 1 for c in seconds},
                             download_bytes=0, upload_bytes=0)


def test_a_round_lasts_as_long_as_its_slowest_client_or_its_deadline():
    seconds = {'a': 1.0, 'b': 5.0, 'c': 3.0}
    kw = dict(clients_per_round=3, epochs=1, heterogeneity=DeviceHeterogeneity(), seed=0,
              client_sizes={c: 1 for c in seconds}, clock=_clock(seconds))
    plan = plan_round(1, ['a', 'b', 'c'], start_time=10.0, **kw)
    assert plan.sim_seconds == 5.0 and plan.sim_time == 15.0 and plan.late == 0
    cut = plan_round(1, ['a', 'b', 'c'], deadline=4.0, **kw)
    assert [c for c, _ in cut.participants] == ['a', 'c'] and cut.late == 1
    assert cut.sim_seconds == 4.0  # The server waited out the deadline for b.


def test_offline_clients_return_nothing_in_a_synchronous_round():
    b = devices.DeviceProfile(2.0, period=10.0, windows=((0.0, 1.0),))  # Gone before it ends.
    c = devices.DeviceProfile(1.0, period=10.0, windows=((5.0, 10.0),))  # Offline at the start.
    plan = plan_round(1, ['a', 'b', 'c'], clients_per_round=3, epochs=1,
                      heterogeneity=DeviceHeterogeneity(), seed=0,
                      client_sizes={'a': 1, 'b': 1, 'c': 1},
                      clock=_clock({'a': 1.0, 'b': 2.0, 'c': 1.0}, {'b': b, 'c': c}))
    assert plan.participants == (('a', 1),) and plan.offline == 2
