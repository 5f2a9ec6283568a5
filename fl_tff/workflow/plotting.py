"""Plots of per-round metrics (matplotlib, headless)."""

from __future__ import annotations

import math
import os
import textwrap
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

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
    fig.suptitle(_fit(title, fig.get_figwidth()))
    fig.tight_layout()
    with files.atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=110)
    plt.close(fig)


def _fit(title: str, width_inches: float) -> str:
    """`title` wrapped to lines that fit a figure `width_inches` wide (about 8 characters of
    matplotlib's title font per inch), so a long title is never cut off at the edges."""
    return textwrap.fill(title, width=max(20, int(8 * width_inches)))


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


def plot_distributions(distributions: dict[str, dict[str, dict[str, float]]], path: str, *,
                       title: str, ylabel: str = 'per-client test accuracy') -> None:
    """One group per run, one box per distribution in it (e.g. 'global', 'personalized'): the
    box spans p10 to p90 with a line at p50, a dot marks the mean and a triangle the mean of
    the worst 10% of clients (the keys `mean`, `p10`, `p50`, `p90`, `worst10pct`)."""
    kinds = list(dict.fromkeys(k for d in distributions.values() for k in d))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    # At most 16 inches wide: many runs get narrower boxes, not a figure no page can show.
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.1 * len(distributions) * len(kinds))),
                                    4.5))
    width = 0.8 / max(1, len(kinds))
    for i, runs in enumerate(distributions.values()):
        for j, kind in enumerate(kinds):
            if kind not in runs:
                continue
            s, x = runs[kind], i + (j - (len(kinds) - 1) / 2) * width
            color = colors[j % len(colors)]
            ax.add_patch(plt.Rectangle((x - width * 0.4, s['p10']), width * 0.8,
                                       s['p90'] - s['p10'], facecolor=color, alpha=0.35,
                                       edgecolor=color, label=kind if i == 0 else None))
            ax.plot([x - width * 0.4, x + width * 0.4], [s['p50']] * 2, color=color, linewidth=2)
            ax.plot([x], [s['mean']], 'o', color=color)
            ax.plot([x], [s['worst10pct']], 'v', color=color)
    ax.plot([], [], 'ko', label='mean')
    ax.plot([], [], 'kv', label='mean of the worst 10%')
    ax.set_xticks(range(len(distributions)))
    ax.set_xticklabels(list(distributions), rotation=15 if len(distributions) <= 8 else 30,
                       ha='right', fontsize=8 if len(distributions) <= 8 else 7)
    ax.set_xlim(-0.6, len(distributions) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(_fit(title, fig.get_figwidth()))
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    with files.atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=110)
    plt.close(fig)


def plot_heatmaps(grids: dict[str, dict[str, dict[str, float]]], path: str, *, title: str,
                  rows_label: str, columns_label: str, missing: str = 'n/a') -> None:
    """One heat map per grid (`{panel title: {row: {column: value in [0, 1]}}}`), side by side,
    each cell printed with its value (NaN: blank, labelled `missing`)."""
    fig, axes = plt.subplots(1, len(grids), squeeze=False,
                             figsize=(max(6.0, 5.5 * len(grids)), 4.8))
    for ax, (panel, grid) in zip(axes[0], grids.items()):
        rows = list(grid)
        columns = list(dict.fromkeys(c for r in grid.values() for c in r))
        values = [[grid[r].get(c, math.nan) for c in columns] for r in rows]
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap='viridis', aspect='auto')
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                ax.text(j, i, missing if math.isnan(v) else f'{v:.2f}', ha='center',
                        va='center', fontsize=7,
                        color='white' if not math.isnan(v) and v < 0.5 else 'black')
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=30, ha='right', fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=8)
        ax.set_xlabel(columns_label)
        ax.set_ylabel(rows_label)
        ax.set_title(panel, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(_fit(title, fig.get_figwidth()))
    fig.tight_layout()
    with files.atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=110)
    plt.close(fig)


def plot_seed_bands(histories: dict[str, Sequence[Sequence[dict[str, Any]]]], metrics: Sequence[str],
                    path: str, *, title: str, log_scale: Sequence[str] = (),
                    hlines: Optional[dict[str, float]] = None) -> None:
    """One panel per metric against round: per run, the mean over its seeds as a line and
    mean ± std as a band (rounds where any seed lacks the metric are skipped)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, metric in zip(axes[0], metrics):
        for i, (label, seeds) in enumerate(histories.items()):
            by_seed = [{r['round']: r[metric] for r in rows if r.get(metric) is not None}
                       for rows in seeds]
            rounds = sorted(set.intersection(*(set(s) for s in by_seed))) if by_seed else []
            if not rounds:
                continue
            values = np.array([[s[r] for r in rounds] for s in by_seed], dtype=float)
            mean, std = values.mean(axis=0), values.std(axis=0)
            color = colors[i % len(colors)]
            ax.plot(rounds, mean, label=f'{label} ({len(seeds)} seeds)', color=color, linewidth=1.5)
            ax.fill_between(rounds, mean - std, mean + std, color=color, alpha=0.2)
        if hlines and metric in hlines:
            ax.axhline(hlines[metric], color='grey', linestyle='--', linewidth=1,
                       label=f'target {hlines[metric]:g}')
        if metric in log_scale:
            ax.set_yscale('log')
        ax.set_xlabel('round')
        ax.set_ylabel(metric.replace('_', ' '))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_fit(title, fig.get_figwidth()))
    fig.tight_layout()
    with files.atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=110)
    plt.close(fig)
