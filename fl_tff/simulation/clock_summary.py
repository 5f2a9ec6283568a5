"""summary.json's `simulated_clock`: simulated time, staleness and participation of a run."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_tff.simulation.async_schedule import AsyncSelector


def clock_summary(select: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Simulated time in total and per round (server update); for asynchronous runs also the
    staleness of every applied update, how many updates each client contributed (fairness of
    participation) and the idle slot time.

    Args:
      select: The run's selector (`ClientSelector` or `AsyncSelector`).
      history: The rounds' metric rows (all of the run, resumed ones included).
    """
    rows = [r for r in history if 'sim_time' in r]
    if not rows:
        return {}
    seconds = np.asarray([r['sim_round_seconds'] for r in rows], float)
    out: dict[str, Any] = {'total_seconds': float(rows[-1]['sim_time']),
                           'seconds_per_round_mean': float(seconds.mean()),
                           'seconds_per_round_max': float(seconds.max())}
    if isinstance(select, AsyncSelector):
        last = rows[-1]['round']
        staleness = np.asarray([s for n in range(1, last + 1)
                                for s in select.plan(n).staleness], float)
        counts = np.asarray(list(select.participation(last).values()), float)
        out.update(
            concurrency=select.concurrency, buffer_size=select.buffer_size,
            staleness={'mean': float(staleness.mean()), 'p50': float(np.percentile(staleness, 50)),
                       'p90': float(np.percentile(staleness, 90)), 'max': int(staleness.max())},
            updates_per_client={'mean': float(counts.mean()), 'min': int(counts.min()),
                                'max': int(counts.max()),
                                'never': float(np.mean(counts == 0))},
            idle_slot_seconds=float(sum(r.get('idle_slot_seconds', 0.0) for r in rows)),
            lost_clients=int(sum(r.get('lost', 0) for r in rows)))
    return out
