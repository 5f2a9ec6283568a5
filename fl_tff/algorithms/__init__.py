"""Federated algorithms, registered by name. Each is a small module of wiring."""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow_federated as tff

from fl_tff.algorithms.fedavg import build_fedavg
from fl_tff.algorithms.fedprox import build_fedprox
from fl_tff.algorithms.fedsgd import build_fedsgd
from fl_tff.algorithms.optimizers import SERVER_OPTIMIZERS, build_optimizer


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm.

    `build(model_fn, *, client_optimizer, server_optimizer, weighting, model_aggregator,
    **params)` returns a LearningProcess (with `error_feedback`, a
    `client_state.StatefulLearningProcess`, whose `next` also takes client states); `params`
    names the config fields it also takes
    (e.g. FedProx's `mu`); `local_epochs` is False when clients make one pass (FedSGD).
    """

    build: Callable[..., tff.learning.templates.LearningProcess]
    params: tuple[str, ...] = ()
    local_epochs: bool = True


ALGORITHMS: dict[str, AlgorithmSpec] = {
    'fedavg': AlgorithmSpec(build_fedavg),
    'fedprox': AlgorithmSpec(build_fedprox, params=('mu',)),
    'fedsgd': AlgorithmSpec(build_fedsgd, local_epochs=False),
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The algorithm registered as `name`."""
    if name not in ALGORITHMS:
        raise ValueError(f'unknown algorithm {name!r}; valid choices: {", ".join(sorted(ALGORITHMS))}')
    return ALGORITHMS[name]
