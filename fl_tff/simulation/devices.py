"""Device profiles and the simulated clock: how long a client's task takes and when it is online.

Each client has a compute speed (seconds per example), a downlink and an uplink bandwidth (bytes
per second) and an availability pattern. They are drawn once per run from seeded heavy-tailed
distributions (`DeviceSettings`), or read from a CSV file (`load_profiles`). A client's task
lasts

    download of the model (bytes / downlink) + its local work (examples x seconds per example)
    + upload of its encoded update (bytes / uplink),

with the byte ledger's real sizes. Availability is a repeating cycle of `period` seconds with
online windows inside it (always online when there are none); a client that goes offline during
a task loses the task.

We write this clock ourselves: TFF's simulation has rounds, not time (Flower neither).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

# An online window inside the availability cycle: [start, end) seconds from the cycle's start.
Window = tuple[float, float]


class DeviceProfileError(ValueError):
    """A bad device profile file or setting; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """One client's device.

    Attributes:
      seconds_per_example: Compute time of one example of local work (one epoch over n examples
        costs n times this).
      downlink_bytes_per_second: Model download speed (inf: instant).
      uplink_bytes_per_second: Update upload speed (inf: instant).
      period: Seconds of the availability cycle (0: always online).
      windows: Online windows inside the cycle (ignored when `period` is 0).
    """

    seconds_per_example: float
    downlink_bytes_per_second: float = math.inf
    uplink_bytes_per_second: float = math.inf
    period: float = 0.0
    windows: tuple[Window, ...] = ()

    def task_seconds(self, examples: int, download_bytes: int, upload_bytes: int) -> float:
        """How long a task of `examples` examples of local work takes, transfers included."""
        return (download_bytes / self.downlink_bytes_per_second
                + examples * self.seconds_per_example
                + upload_bytes / self.uplink_bytes_per_second)

    def __post_init__(self):
        # Windows sorted and merged (overlapping or touching ones become one), so coverage and
        # the end of an online stretch are read off directly.
        merged: list[list[float]] = []
        for a, b in sorted(self.windows):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        object.__setattr__(self, 'windows', tuple((a, b) for a, b in merged))

    @property
    def always_online(self) -> bool:
        return self.period <= 0 or self.windows == ((0.0, self.period),) or (
            len(self.windows) == 1 and self.windows[0][0] <= 0 and self.windows[0][1] >= self.period)

    def _cycle(self, t: float) -> tuple[int, float]:
        """(cycle number, phase in [0, period)) of time `t`."""
        k = math.floor(t / self.period)
        phase = t - k * self.period
        if phase >= self.period:  # Float rounding at a cycle boundary.
            k, phase = k + 1, phase - self.period
        elif phase < 0:
            k, phase = k - 1, phase + self.period
        return k, phase

    def online(self, t: float) -> bool:
        """Whether the device is online at simulated time `t`."""
        if self.always_online:
            return True
        _, phase = self._cycle(t)
        return any(a <= phase < b for a, b in self.windows)

    def online_until(self, t: float) -> float:
        """When the device, online at `t`, next goes offline (inf when it never does; `t` when
        it is offline at `t`)."""
        if self.always_online:
            return math.inf
        k, phase = self._cycle(t)
        for a, b in self.windows:
            if a <= phase < b:
                first_a, first_b = self.windows[0]
                if b >= self.period and first_a <= 0:  # Runs on into the next cycle's first.
                    return (k + 1) * self.period + first_b
                return k * self.period + b
        return t

    def next_online(self, t: float) -> float:
        """The first time >= `t` at which the device is online (inf if never)."""
        if self.always_online or self.online(t):
            return t
        if not self.windows:
            return math.inf
        k, phase = self._cycle(t)
        later = [a for a, _ in self.windows if a > phase]
        return k * self.period + later[0] if later else (k + 1) * self.period + self.windows[0][0]


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """How device profiles are drawn (all seeded by the run's seed).

    Attributes:
      seconds_per_example: Median compute time per example.
      speed_sigma: Sigma of the log-normal spread of compute speeds (0: identical devices;
        1: heavy-tailed, a tenth of devices ~3.6x slower than the median).
      downlink_mbps / uplink_mbps: Median bandwidths in megabits per second (0: instant).
      bandwidth_sigma: Sigma of the log-normal spread of bandwidths.
      intermittent_fraction: Fraction of clients with on/off availability.
      period_seconds: Length of an intermittent client's availability cycle.
      on_fraction: Fraction of the cycle an intermittent client is online (its window starts
        at a random phase).
      profiles_file: A CSV of profiles to use instead of drawing them (`load_profiles`).
    """

    seconds_per_example: float = 0.01
    speed_sigma: float = 1.0
    downlink_mbps: float = 20.0
    uplink_mbps: float = 5.0
    bandwidth_sigma: float = 0.0
    intermittent_fraction: float = 0.0
    period_seconds: float = 3600.0
    on_fraction: float = 0.5
    profiles_file: str = ''

    def problem(self) -> Optional[tuple[str, str]]:
        """(setting, why) of the first invalid setting, or None."""
        checks = [
            ('seconds_per_example', self.seconds_per_example >= 0, '>= 0'),
            ('device_speed_sigma', self.speed_sigma >= 0, '>= 0'),
            ('downlink_mbps', self.downlink_mbps >= 0, '>= 0 (0: instant)'),
            ('uplink_mbps', self.uplink_mbps >= 0, '>= 0 (0: instant)'),
            ('bandwidth_sigma', self.bandwidth_sigma >= 0, '>= 0'),
            ('intermittent_fraction', 0 <= self.intermittent_fraction <= 1, 'in [0, 1]'),
            ('availability_period', self.period_seconds > 0, '> 0 seconds'),
            ('availability_on_fraction', 0 < self.on_fraction <= 1, 'in (0, 1]'),
        ]
        for name, ok, valid in checks:
            if not ok:
                return name, f'must be {valid}, got {getattr(self, _FIELD.get(name, name))}'
        return None


_FIELD = {'device_speed_sigma': 'speed_sigma', 'availability_period': 'period_seconds',
          'availability_on_fraction': 'on_fraction'}


def _key(client_id: str) -> int:
    return int.from_bytes(client_id.encode()[-8:].rjust(8, b'\0'), 'big')


def relative_slowness(seed: int, client_id: str) -> float:
    """A client's fixed relative slowness, LogNormal(0, 1), drawn from (seed, client id)."""
    return float(np.random.default_rng([seed, _key(client_id), 0x51]).lognormal(0.0, 1.0))


def draw_profiles(settings: DeviceSettings, client_ids: Sequence[str],
                  seed: int) -> dict[str, DeviceProfile]:
    """Each client's profile drawn from `settings` (or read from its file), by client id."""
    if settings.profiles_file:
        return load_profiles(settings.profiles_file, client_ids)
    intermittent = set()
    if settings.intermittent_fraction > 0:
        chosen = np.random.default_rng([seed, 0xA7A1]).choice(
            len(client_ids), size=int(round(settings.intermittent_fraction * len(client_ids))),
            replace=False)
        intermittent = {client_ids[i] for i in chosen}
    out = {}
    for cid in client_ids:
        # The speed keeps the per-client LogNormal(0, 1) draw over-selection always used,
        # scaled to the spread asked for.
        z = math.log(relative_slowness(seed, cid))
        rng = np.random.default_rng([seed, _key(cid), 0xB4D])
        down_z, up_z, phase = rng.standard_normal(), rng.standard_normal(), rng.random()
        kwargs = {}
        if cid in intermittent and settings.on_fraction < 1:
            on = settings.on_fraction * settings.period_seconds
            start = phase * settings.period_seconds
            end = start + on
            windows = [(start, min(end, settings.period_seconds))]
            if end > settings.period_seconds:
                windows.insert(0, (0.0, end - settings.period_seconds))
            kwargs = dict(period=settings.period_seconds, windows=tuple(windows))
        out[cid] = DeviceProfile(
            seconds_per_example=settings.seconds_per_example * math.exp(settings.speed_sigma * z),
            downlink_bytes_per_second=_bytes_per_second(settings.downlink_mbps,
                                                        settings.bandwidth_sigma * down_z),
            uplink_bytes_per_second=_bytes_per_second(settings.uplink_mbps,
                                                      settings.bandwidth_sigma * up_z),
            **kwargs)
    return out


def _bytes_per_second(mbps: float, log_factor: float) -> float:
    return math.inf if mbps <= 0 else mbps * 1e6 / 8 * math.exp(log_factor)


PROFILE_COLUMNS = ('client_id', 'seconds_per_example', 'downlink_bytes_per_second',
                   'uplink_bytes_per_second', 'availability')


def load_profiles(path: str, client_ids: Sequence[str]) -> dict[str, DeviceProfile]:
    """Profiles from a CSV file with the columns `PROFILE_COLUMNS`, one row per client.

    `availability` is empty or `always`, or `PERIOD:START-END[;START-END...]` (seconds), e.g.
    `86400:28800-79200` for a device online from 8:00 to 22:00 every day. Bandwidths of 0 or
    `inf` are instant.

    Raises:
      DeviceProfileError: The file does not read or is not UTF-8 text, lacks a column, has a
        row cut short, a bad value or two rows for one client, or has no row for one of
        `client_ids` (the message names the line).
    """
    try:
        with open(path, newline='', encoding='utf-8') as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DeviceProfileError(f'cannot read {path!r}: {e.strerror}') from e
    except UnicodeDecodeError as e:
        raise DeviceProfileError(f'{path!r} is not UTF-8 text (byte {e.start}: {e.reason}); '
                                 'give a CSV file') from e
    missing = [c for c in PROFILE_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DeviceProfileError(f'{path!r} needs the columns {", ".join(PROFILE_COLUMNS)}'
                                 + (f' (missing: {", ".join(missing)})' if missing else
                                    ' and one row per client'))
    profiles, lines = {}, {}
    for line, row in enumerate(rows, start=2):
        short = [c for c in PROFILE_COLUMNS if row.get(c) is None]
        if short:
            raise DeviceProfileError(f'{path!r} line {line} is cut short: no value for '
                                     f'{", ".join(short)}')
        client = row['client_id']
        if client in lines:
            raise DeviceProfileError(f'{path!r} line {line}: a second row for client {client!r} '
                                     f'(the first is line {lines[client]}); give one row per client')
        lines[client] = line
        try:
            profiles[client] = _parse_row(row)
        except (ValueError, TypeError) as e:
            raise DeviceProfileError(f'{path!r} line {line}: {e}') from e
    absent = [c for c in client_ids if c not in profiles]
    if absent:
        raise DeviceProfileError(f'{path!r} has no profile for {len(absent)} clients, e.g. '
                                 f'{absent[0]!r}; give one row per client id')
    return {cid: profiles[cid] for cid in client_ids}


def _parse_row(row: Mapping[str, str]) -> DeviceProfile:
    speed = float(row['seconds_per_example'])
    down, up = (float(row[k]) for k in ('downlink_bytes_per_second', 'uplink_bytes_per_second'))
    if not (math.isfinite(speed) and speed >= 0 and down >= 0 and up >= 0):  # nan fails too.
        raise ValueError('seconds_per_example must be finite and >= 0, bandwidths >= 0')
    availability = (row.get('availability') or '').strip()
    period, windows = 0.0, ()
    if availability and availability != 'always':
        head, _, spans = availability.partition(':')
        period = float(head)
        windows = tuple(tuple(float(x) for x in span.split('-')) for span in spans.split(';'))
        if period <= 0 or not windows or any(
                len(w) != 2 or not 0 <= w[0] < w[1] <= period for w in windows):
            raise ValueError(f'availability {availability!r}: use PERIOD:START-END[;START-END] '
                             'with 0 <= START < END <= PERIOD')
    return DeviceProfile(speed, down or math.inf, up or math.inf, period, windows)


class TaskClock:
    """Simulated task durations and availability for a population (see the module docstring).

    Args:
      profiles: Each client's device, by client id.
      client_sizes: Each client's number of training examples.
      download_bytes: Bytes of the model a client downloads per task (the byte ledger's).
      upload_bytes: Bytes of the encoded update a client uploads per task (the byte ledger's).
    """

    def __init__(self, profiles: Mapping[str, DeviceProfile], client_sizes: Mapping[str, int], *,
                 download_bytes: int, upload_bytes: int):
        self.profiles = dict(profiles)
        self._sizes = dict(client_sizes)
        self.download_bytes, self.upload_bytes = int(download_bytes), int(upload_bytes)
        self.has_availability = any(not p.always_online for p in self.profiles.values())

    def task_seconds(self, client_id: str, epochs: int) -> float:
        """How long `client_id` needs for `epochs` local epochs, transfers included."""
        return self.profiles[client_id].task_seconds(
            self._sizes[client_id] * epochs, self.download_bytes, self.upload_bytes)

    def online(self, client_id: str, t: float) -> bool:
        return self.profiles[client_id].online(t)

    def online_until(self, client_id: str, t: float) -> float:
        return self.profiles[client_id].online_until(t)

    def next_online(self, client_ids: Sequence[str], t: float) -> float:
        """The first time >= t at which one of `client_ids` is online (inf if none ever is)."""
        return min((self.profiles[cid].next_online(t) for cid in client_ids), default=math.inf)
