"""When a run has diverged, by one documented rule.

A round has diverged when any of these holds:

1. the aggregated update was not finite (the server skipped it);
2. its train loss (the mean loss over the round's local steps; a round in which every client
   dropped out has none), its global train loss or its test loss (when evaluated) is NaN or
   infinite;
3. with `factor > 0`: its train loss or global train loss exceeds `factor` times the initial
   model's global train loss (the loss of the round-0 model on all training data, which is
   about ln(classes) for a fresh classifier). A run whose loss is ten times what it started at
   is not learning; e.g. client learning rate 50 on digits gives a round-1 train loss of ~1e29.

`factor = 0` turns rule 3 off; rules 1 and 2 always apply (a non-finite model cannot continue).
"""

from __future__ import annotations

import math
from typing import Any, Optional

# Loss columns compared with the initial loss (rule 3) and checked for finiteness (rule 2).
_COMPARED = ('train_loss', 'global_train_loss')
_FINITE = (*_COMPARED, 'test_loss')


class DivergenceError(RuntimeError):
    """Training diverged; the last good checkpoint is kept.

    Attributes:
      round_num: The round that diverged.
      run_dir: The run's directory (set by the experiment that ran it).
    """

    def __init__(self, message: str, round_num: int, run_dir: Optional[str] = None):
        super().__init__(message)
        self.round_num, self.run_dir = round_num, run_dir


class DivergenceMonitor:
    """Applies the module's rule to each round's metrics row.

    Args:
      initial_loss: The initial model's global train loss (the reference of rule 3).
      factor: The multiple of `initial_loss` beyond which a loss counts as diverged (0: off).
    """

    def __init__(self, initial_loss: float, factor: float):
        self.initial_loss, self.factor = float(initial_loss), float(factor)
        self.limit = (self.factor * self.initial_loss
                      if self.factor > 0 and math.isfinite(self.initial_loss) else math.inf)

    def check(self, row: dict[str, Any]) -> None:
        """Raises DivergenceError when the round of `row` diverged."""
        prefix = f'training diverged at round {row["round"]}'
        if row.get('server_update_skipped'):
            raise DivergenceError(f'{prefix}: the aggregated update was not finite', row['round'])
        for key in _FINITE:
            if key == 'train_loss' and (not row.get('clients') or row.get('secagg_aborted')):
                continue  # Every client dropped out, or the secure aggregation protocol
                # aborted: no train loss this round (NaN by design).
            if key in row and not math.isfinite(row[key]):
                raise DivergenceError(f'{prefix}: {key} is {row[key]}', row['round'])
        for key in _COMPARED:
            if key in row and row[key] > self.limit:
                raise DivergenceError(
                    f'{prefix}: {key} {row[key]:.4g} exceeds --divergence_factor={self.factor:g} x '
                    f'the initial loss {self.initial_loss:.4g} (lower the learning rates, or set '
                    '--divergence_factor=0 to only stop on NaN/inf)', row['round'])
