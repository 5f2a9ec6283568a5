"""The studies, one module each, registered by one line each (as options are)."""

from __future__ import annotations

from fl_tff.studies import (adaptive_optimizers, asynchronous, byzantine, compression_uplink, dp_privacy_utility, fedavg_vs_fedsgd, fedprox_stragglers, personalization, private_async, qffl_fairness, scaffold_heterogeneity)
from fl_tff.studies.base import Study

STUDIES: dict[str, Study] = {module.NAME: module.STUDY for module in (
    fedprox_stragglers,
    fedavg_vs_fedsgd,
    dp_privacy_utility,
    compression_uplink,
    scaffold_heterogeneity,
    personalization,
    qffl_fairness,
    asynchronous,
    private_async,
    adaptive_optimizers,
    byzantine,
)}
