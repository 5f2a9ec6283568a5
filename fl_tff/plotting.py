"""Plots of per-round metrics (matplotlib, headless)."""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from fl_tff import files  # noqa: E402


def plot_curves(histories: dict[str, Sequence[dict[str, Any]]], metrics: Sequence[str], path: str, *,
                title: str, log_scale: Sequence[str] = (),
                hlines: Optional[dict[str, float]] = None,
                x_axes: Sequence[tuple[str, str]] = (('round', 'round'),)) -> None:
    """A grid of panels: one row per x axis (column key, label), one column per metric, one
    line per run; rows lacking a value are skipped. `log_scale` names metrics or x keys shown
    on a log axis."""
    fig, axes = plt.subplots(len(x_axes), len(metrics), figsize=(5.5 * len(metrics), 4 * len(x_axes)),
                             squeeze=False)
    for (x_key, x_label), ax_row in zip(x_axes, axes):
        for ax, metric in zip(ax_row, metrics):
            _panel(ax, histories, x_key, x_label, metric, log_scale, hlines)
    fig.suptitle(title)
    fig.tight_layout()
    with files.atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=110)
    plt.close(fig)


def _panel(ax, histories, x_key, x_label, metric, log_scale, hlines) -> None:
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (label, rows) in enumerate(histories.items()):  # A run keeps its colour in every panel.
        points = [(r[x_key], r[metric]) for r in rows
                  if x_key in r and r.get(metric) is not None and math.isfinite(r[metric])
                  and math.isfinite(r[x_key])]
        if points:
            ax.plot(*zip(*points), label=label, linewidth=1.5, color=colors[i % len(colors)])
    if hlines and metric in hlines:
        ax.axhline(hlines[metric], color='grey', linestyle='--', linewidth=1,
                   label=f'target {hlines[metric]:g}')
    if metric in log_scale:
        ax.set_yscale('log')
    if x_key in log_scale:
        ax.set_xscale('log')
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace('_', ' '))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
