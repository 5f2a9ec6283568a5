"""FedNova against its update rule written plainly (Wang et al. 2020, vanilla SGD clients), and
FedAvg when every client takes the same number of local steps."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.fednova import build_fednova
from fl_tff.data import client_rounds as rounds_lib
from fl_tff.privacy.dpsgd import DpSgd
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import PlainSgd, client_rounds, max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05


def _plain_round(keras_fn, x, rounds_data):
    """x - tau_eff sum_i p_i (x - y_i) / tau_i, p_i = examples processed / their sum."""
    ds, taus, ps = [], [], []
    sgd = PlainSgd(keras_fn, LR)
    for data in rounds_data:
        sgd.load(x)
        batches = list(to_batches(data))
        for b in batches:
            sgd.step(b['x'], b['y'])
        taus.append(len(batches))
        ps.append(sum(int(b['y'].shape[0]) for b in batches))
        ds.append([(a - v) / len(batches) for a, v in zip(x, sgd.weights())])
    p = np.array(ps, float) / sum(ps)
    tau_eff = float(np.dot(p, taus))
    return [a - tau_eff * sum(pi * d[i] for pi, d in zip(p, ds)) for i, a in enumerate(x)]


def test_two_rounds_equal_the_normalized_update_written_plainly(tff_runtime, setup, keras_fn):
    model_fn, select = setup  # Clients of different sizes: different numbers of local steps.
    process = build_fednova(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    initial = process.get_model_weights(process.initialize())
    weights, _ = run_rounds(process, select, 2)
    x = [np.asarray(t) for t in initial.trainable]
    for r in (1, 2):
        x = _plain_round(keras_fn, x, client_rounds(select, r))
    assert max_abs_diff(weights.trainable, x) <= 1e-5
    fedavg, _ = run_rounds(build_fedavg(model_fn, client_optimizer=SGD(LR)), select, 2)
    assert max_abs_diff(weights.trainable, fedavg.trainable) > 1e-4  # Normalizing matters here.


@pytest.mark.parametrize('dp_sgd', [None, DpSgd(clip=0.3, noise_multiplier=0.8)])
def test_equal_local_steps_give_fedavg(tff_runtime, setup, skewed_digits, dp_sgd):
    """Also with example-level DP-SGD in both (clipping and seeded noise)."""
    model_fn, _ = setup
    big = [c for c, n in skewed_digits.train_sizes.items() if n >= 24]
    assert len(big) >= 3
    rounds = [rounds_lib.from_batches(skewed_digits.train.create_tf_dataset_for_client(c)
                                      .batch(8, drop_remainder=True).take(3))
              for c in big]  # Three steps of 8 each.
    outputs = []
    for process in (build_fednova(model_fn, client_optimizer=SGD(LR), dp_sgd=dp_sgd),
                    build_fedavg(model_fn, client_optimizer=SGD(LR), dp_sgd=dp_sgd),
                    build_fedavg(model_fn, client_optimizer=SGD(LR))):
        state = process.initialize()
        for _ in range(2):
            state = process.next(state, rounds).state
        outputs.append(process.get_model_weights(state).trainable)
    assert max_abs_diff(outputs[0], outputs[1]) <= 1e-6
    if dp_sgd is not None:
        assert max_abs_diff(outputs[0], outputs[2]) > 1e-3  # DP-SGD acted.
