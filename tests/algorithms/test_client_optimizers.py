"""`--client_optimizer`: the driver path hands the algorithm the optimizer the flags select, with
its parameters; algorithms written for plain SGD refuse the stateful ones (their parity with
TFF's builder is in test_fedavg.py)."""

import dataclasses

import numpy as np
import pytest

from fl_tff import experiment
from fl_tff.algorithms import ALGORITHMS
from fl_tff.config import ConfigError, ExperimentConfig


def _optimizer_state(optimizer):
    return {k: float(np.asarray(v)) for k, v in optimizer.initialize(
        (np.zeros(2, np.float32),)).items() if np.ndim(v) == 0}


@pytest.mark.parametrize('flags,expected', [
    (dict(), {'learning_rate': 0.02}),
    (dict(client_optimizer='sgdm', client_momentum=0.5), {'learning_rate': 0.02, 'momentum': 0.5}),
    (dict(client_optimizer='adam', client_beta2=0.99),
     {'learning_rate': 0.02, 'beta_1': 0.9, 'beta_2': 0.99, 'epsilon': 1e-7}),
])
def test_the_driver_path_builds_the_selected_client_optimizer(monkeypatch, flags, expected):
    captured = {}
    fedavg = ALGORITHMS['fedavg']
    monkeypatch.setitem(ALGORITHMS.options, 'fedavg', dataclasses.replace(
        fedavg, build=lambda model_fn, **kwargs: captured.update(kwargs)))
    config = ExperimentConfig(client_learning_rate=0.02, **flags).validate()
    experiment.build_process(config, model_fn=None)
    state = _optimizer_state(captured['client_optimizer'])
    assert state.keys() >= expected.keys()
    assert {k: state[k] for k in expected} == pytest.approx(expected)
    if not flags:  # Plain SGD: its state is its learning rate only.
        assert set(state) == {'learning_rate'}


@pytest.mark.parametrize('algorithm', ['scaffold', 'qffl', 'fednova', 'ditto', 'mimelite', 'fedsgd'])
def test_algorithms_written_for_plain_sgd_refuse_stateful_client_optimizers(algorithm):
    with pytest.raises(ConfigError, match=rf'--client_optimizer: --client_optimizer=adam does not '
                                          rf'combine with --algorithm={algorithm}: '):
        ExperimentConfig(algorithm=algorithm, client_optimizer='adam',
                         client_weighting='examples_processed').validate()
