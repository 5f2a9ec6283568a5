"""FedSGD and adaptive server optimizers against TFF's builders."""

import pytest
import tensorflow_federated as tff

from fl_tff import options, simulation
from fl_tff.algorithms import (SERVER_OPTIMIZERS, build_fedavg, build_fedsgd, build_optimizer,
                               get_algorithm)
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import max_abs_diff, valid_choices


def test_fedsgd_parity_with_tff_build_fed_sgd(tff_runtime, setup, skewed_digits):
    model_fn, _ = setup
    one_pass = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=4, epochs=1, batch_size=16, seed=2)
    ours = build_fedsgd(model_fn, server_optimizer=tff.learning.optimizers.build_sgdm(0.5))
    reference = tff.learning.algorithms.build_fed_sgd(
        model_fn, server_optimizer_fn=tff.learning.optimizers.build_sgdm(0.5))
    initial = ours.get_model_weights(ours.initialize())
    a, _ = run_rounds(ours, one_pass, 3, initial)
    b, _ = run_rounds(reference, one_pass, 3, initial)
    assert max_abs_diff(a.trainable, initial.trainable) > 1e-3
    assert max_abs_diff(a.trainable, b.trainable) <= 1e-5
    assert options.LOCAL_EPOCHS not in get_algorithm('fedsgd').provides
    assert options.LOCAL_EPOCHS in get_algorithm('fedavg').provides


@pytest.mark.parametrize('name', ['adam', 'sgdm', 'yogi', 'adagrad'])
def test_adaptive_server_optimizer_parity_with_tff_fed_avg(tff_runtime, setup, name):
    model_fn, select = setup

    def server_opt():
        return build_optimizer(name, 0.05, momentum=0.9, beta1=0.9, beta2=0.99, epsilon=1e-3)

    client_opt = tff.learning.optimizers.build_sgdm(0.05)
    ours = build_fedavg(model_fn, client_optimizer=client_opt, server_optimizer=server_opt())
    reference = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=client_opt, server_optimizer_fn=server_opt())
    plain = build_fedavg(model_fn, client_optimizer=client_opt,
                         server_optimizer=tff.learning.optimizers.build_sgdm(0.05))
    initial = ours.get_model_weights(ours.initialize())
    a, _ = run_rounds(ours, select, 3, initial)
    b, _ = run_rounds(reference, select, 3, initial)
    c, _ = run_rounds(plain, select, 3, initial)
    assert max_abs_diff(a.trainable, b.trainable) <= 1e-5
    assert max_abs_diff(a.trainable, c.trainable) > 1e-3  # the optimizer changes the result


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match=f"unknown server_optimizer 'rmsprop'; valid choices: {valid_choices(SERVER_OPTIMIZERS)}$"):
        build_optimizer('rmsprop', 0.1)
