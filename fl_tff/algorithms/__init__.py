"""Federated algorithms, registered by name. Each is a small module of wiring."""

from __future__ import annotations

from typing import Callable

import tensorflow_federated as tff

from fl_tff.algorithms.fedavg import build_fedavg

# Every builder takes (model_fn, *, client_optimizer, server_optimizer, weighting, ...).
ALGORITHMS: dict[str, Callable[..., tff.learning.templates.LearningProcess]] = {
    'fedavg': build_fedavg,
}


def get_algorithm(name: str) -> Callable[..., tff.learning.templates.LearningProcess]:
    """The builder registered as `name`."""
    if name not in ALGORITHMS:
        raise ValueError(f'unknown algorithm {name!r}; valid choices: {sorted(ALGORITHMS)}')
    return ALGORITHMS[name]
