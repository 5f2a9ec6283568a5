"""A round's training columns, from the nested metrics TFF's processes report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_tff.models.model_fn import accuracy_metric

Metrics = dict[str, Any]


def flatten_training_metrics(metrics) -> Metrics:
    """The scalar columns we report from a LearningProcess's nested metrics.

    When every client's update was non-finite (all dropped, metrics reset) the train loss and
    accuracy are NaN, not TFF's 0/0 = 0, so a diverged run cannot look like a converged one.
    """
    train = metrics['client_work']['train']
    examples = int(train['num_examples'])
    row = {'train_loss': float(train['loss']) if examples else float('nan'),
           'train_accuracy': accuracy_metric(train) if examples else float('nan'),
           'train_examples': examples}
    finalizer = metrics.get('finalizer') or {}
    if 'update_non_finite' in finalizer:
        row['server_update_skipped'] = int(finalizer['update_non_finite'])
    dp_query = (metrics.get('aggregator') or {}).get('dp_query_metrics') or {}
    if 'clip' in dp_query:  # Adaptive clipping's current clip norm.
        row['dp_clip'] = float(dp_query['clip'])
    clipped = _find(metrics.get('aggregator'), 'secure_clipped_fraction')
    if clipped is not None:  # Values clipped to the secure sum's range.
        row['secure_clipped_fraction'] = float(clipped)
    return row


def _find(metrics, key: str):
    """The value under `key` anywhere in nested metrics (aggregators nest theirs), or None."""
    if not isinstance(metrics, Mapping):
        return None
    for name, value in metrics.items():
        found = value if name == key else _find(value, key)
        if found is not None:
            return found
    return None
