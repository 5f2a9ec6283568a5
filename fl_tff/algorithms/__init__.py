"""Federated algorithms, each declared as an `options.Option` in its own module and
registered here by one line.

An algorithm's builder is `build(model_fn, *, client_optimizer, server_optimizer, weighting,
model_aggregator, **extras, **params)` and returns a `tff.learning.templates.LearningProcess`,
or a `client_state.StatefulLearningProcess` when its clients keep state; `params` are the
option's declared parameters, `extras` what other selected options add (`Option.client_extras`,
e.g. `dp_sgd` for options that need `DP_SGD_CLIENT`).
"""

from __future__ import annotations

from fl_tff import options
from fl_tff.algorithms import (ditto, fedasync, fedavg, fedbuff, feddyn, fednova, fedper, fedprox,
                               fedrecon, fedrep, fedsgd, mimelite, qffl, scaffold)
from fl_tff.algorithms.fedavg import build_fedavg
from fl_tff.algorithms.fedprox import build_fedprox
from fl_tff.algorithms.fedsgd import build_fedsgd
from fl_tff.algorithms.optimizers import SERVER_OPTIMIZERS, build_optimizer

ALGORITHMS = options.Registry('algorithm', 'Federated algorithm.', [
    fedavg.OPTION,
    fedprox.OPTION,
    fedsgd.OPTION,
    scaffold.OPTION,
    fedper.OPTION,
    fedrep.OPTION,
    ditto.OPTION,
    fedrecon.OPTION,
    fedbuff.OPTION,
    fedasync.OPTION,
    qffl.OPTION,
    fednova.OPTION,
    mimelite.OPTION,
    feddyn.OPTION,
], default='fedavg')


def get_algorithm(name: str) -> options.Option:
    """The algorithm registered as `name` (ValueError naming the valid choices otherwise)."""
    return ALGORITHMS.get(name)
