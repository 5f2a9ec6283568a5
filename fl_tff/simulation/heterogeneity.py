"""Systems heterogeneity: stragglers, dropouts and over-selection, simulated per round.

As in the FedProx paper (Li et al. 2020, section 5.2), a fixed fraction of each round's
selected clients are stragglers that can only run a random number of local epochs in [1, E).
With policy `drop` they are discarded (FedAvg's behaviour); with `partial` their partial work
is aggregated (FedProx's). A dropout (`dropout_rate`) leaves at one point of the round, drawn
once, uniformly among `DROP_POINTS`: before training or before its upload it returns nothing;
after its upload its update counts (it only misses what comes after, e.g. SecAgg's unmasking),
so a rate r loses 2r/3 of the updates, and runs with and without SecAgg see the same clients
drop. Over-selection samples ceil(K (1 + r))
clients and aggregates the first K to finish under a simulated per-client time: the device
clock's task time (`fl_tff.simulation.devices`) when one is given, else examples x epochs x a
per-client slowness drawn once from LogNormal(0, 1). With a clock, a round also has a simulated
duration (as long as its slowest aggregated client, or its deadline), clients offline at its
start or going offline before they finish return nothing, and clients slower than the deadline
are late.
Everything is drawn from generators seeded by (seed, round), so a run is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from fl_tff import options
from fl_tff.rounds import RoundPlan
from fl_tff.simulation import devices

STRAGGLER_POLICIES = options.Registry('straggler_policy', 'What happens to stragglers.', [
    options.Option('drop', 'discarded (FedAvg\'s behaviour)', provides={options.DROPS_CLIENTS}),
    options.Option('partial', 'their partial work is aggregated (FedProx\'s)'),
], default='drop')


# Where a dropout leaves its round, each as likely: the first two lose its update.
DROP_POINTS = ('before_training', 'before_upload', 'after_upload')


class HeterogeneityError(ValueError):
    """A bad device-heterogeneity setting; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class DeviceHeterogeneity:
    """How selected clients misbehave. The defaults describe ideal devices."""

    straggler_fraction: float = 0.0
    straggler_policy: str = 'drop'
    dropout_rate: float = 0.0
    over_selection: float = 0.0

    def validate(self, epochs: int) -> None:
        """Raises HeterogeneityError naming the bad setting."""
        if not 0.0 <= self.straggler_fraction <= 1.0:
            raise HeterogeneityError('straggler_fraction', 'straggler_fraction must be in [0, 1], '
                                     f'got {self.straggler_fraction}')
        try:
            STRAGGLER_POLICIES.get(self.straggler_policy)
        except options.OptionError as e:
            raise HeterogeneityError('straggler_policy', str(e)) from e
        if self.straggler_fraction > 0 and epochs < 2:
            raise HeterogeneityError('straggler_fraction', 'stragglers run fewer than E local '
                                     f'epochs, so they need E >= 2 (client_epochs is {epochs})')
        if not 0.0 <= self.dropout_rate < 1.0:
            raise HeterogeneityError('dropout_rate', f'dropout_rate must be in [0, 1), got {self.dropout_rate}')
        if self.over_selection < 0:
            raise HeterogeneityError('over_selection', f'over_selection must be >= 0, got {self.over_selection}')


def selection_size(clients_per_round: int, over_selection: float) -> int:
    """ceil(K (1 + r)): how many clients to sample when over-selecting by r."""
    return int(math.ceil(clients_per_round * (1.0 + over_selection) - 1e-9))


def plan_round(round_num: int, selected: Sequence[str], *, clients_per_round: int, epochs: int,
               heterogeneity: DeviceHeterogeneity, seed: int,
               client_sizes: Mapping[str, int], clock: Optional[devices.TaskClock] = None,
               start_time: float = 0.0, deadline: float = 0.0) -> RoundPlan:
    """Decides dropouts, stragglers, (with a clock) offline clients and the deadline, and (with
    over-selection) the first K finishers.

    Args:
      clock: Simulated task times and availability; None: no simulated time (over-selection
        then ranks by examples x epochs x a LogNormal(0, 1) slowness).
      start_time: Simulated time at which the round starts (with a clock).
      deadline: Seconds after which the server stops waiting (0: none); needs a clock.
    """
    h = heterogeneity
    rng = np.random.default_rng([seed, round_num, 0x5EED])
    n = len(selected)
    dropout = rng.random(n) < h.dropout_rate
    # The drop point, from its own generator: the draws below are the same as without it.
    points = np.random.default_rng([seed, round_num, 0xD209]).integers(0, len(DROP_POINTS), n)
    dropped = dropout & (points < DROP_POINTS.index('after_upload'))
    straggler_idx = rng.choice(n, size=int(round(h.straggler_fraction * n)), replace=False)
    is_straggler = np.zeros(n, bool)
    is_straggler[straggler_idx] = True
    local_epochs = np.where(is_straggler, rng.integers(1, max(epochs, 2), size=n), epochs)
    drops = options.DROPS_CLIENTS in STRAGGLER_POLICIES[h.straggler_policy].provides
    survivors = [i for i in range(n) if not dropped[i]
                 and not (is_straggler[i] and drops)]
    if clock is None:  # Finishing times matter only to over-selection.
        finish = {i: client_sizes[selected[i]] * local_epochs[i] * _slowness(seed, selected[i])
                  for i in survivors} if len(survivors) > clients_per_round else {}
    else:
        finish = {i: clock.task_seconds(selected[i], int(local_epochs[i])) for i in survivors}
    offline = 0
    if clock is not None and clock.has_availability:
        reachable = [i for i in survivors if clock.online(selected[i], start_time) and
                     start_time + finish[i] <= clock.online_until(selected[i], start_time)]
        offline, survivors = len(survivors) - len(reachable), reachable
    late = 0
    if deadline > 0:
        in_time = [i for i in survivors if finish[i] <= deadline]
        late, survivors = len(survivors) - len(in_time), in_time
    if len(survivors) > clients_per_round:
        ranked = sorted(survivors, key=lambda i: (finish[i], i))
        late += len(ranked) - clients_per_round
        survivors = sorted(ranked[:clients_per_round])
    participants = tuple((selected[i], int(local_epochs[i])) for i in survivors)
    timing = {}
    if clock is not None:
        # Nobody reported and no deadline: the server waits as long as the slowest selected
        # task would have taken before it gives up on the round.
        seconds = max((finish[i] for i in survivors), default=0.0) if survivors else max(
            (clock.task_seconds(selected[i], int(local_epochs[i])) for i in range(n)),
            default=0.0)
        if deadline > 0 and len(survivors) < min(clients_per_round, n):
            seconds = deadline  # Fewer than K reported: the server waits out the deadline.
        timing = dict(sim_seconds=float(seconds), sim_time=float(start_time + seconds))
    return RoundPlan(
        round_num=round_num, selected=tuple(selected), participants=participants,
        dropped=int(dropped.sum()), stragglers=int(is_straggler.sum()),
        partial=sum(1 for i in survivors if is_straggler[i]), late=late, offline=offline,
        drop_points=tuple((selected[i], DROP_POINTS[points[i]]) for i in range(n) if dropout[i]),
        **timing)


def _slowness(seed: int, client_id: str) -> float:
    """A client's fixed relative slowness (its device speed), LogNormal(0, 1)."""
    return devices.relative_slowness(seed, client_id)
