"""Plots of per-round metrics (matplotlib, headless)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def plot_curves(histories: dict[str, Sequence[dict[str, Any]]], metrics: Sequence[str], path: str, *,
                title: str, log_scale: Sequence[str] = (),
                hlines: Optional[dict[str, float]] = None) -> None:
    """One panel per metric against round, one line per run; rows lacking a metric are skipped."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, rows in histories.items():
            points = [(r['round'], r[metric]) for r in rows
                      if metric in r and r[metric] is not None and math.isfinite(r[metric])]
            if points:
                ax.plot(*zip(*points), label=label, linewidth=1.5)
        if hlines and metric in hlines:
            ax.axhline(hlines[metric], color='grey', linestyle='--', linewidth=1,
                       label=f'target {hlines[metric]:g}')
        if metric in log_scale:
            ax.set_yscale('log')
        ax.set_xlabel('round')
        ax.set_ylabel(metric.replace('_', ' '))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
