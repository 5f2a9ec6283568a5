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
from tests.helpers import (PlainSgd, client_rounds, max_abs_diff, numpy_top_k, plan_rounds,
                           run_with_client_state_slots, to_batches)

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05


def _plain_round(keras_fn, x, rounds_data, send=lambda i, d: d):
    """x - tau_eff sum_i p_i send_i(d_i), d_i = (x - y_i) / tau_i, p_i = examples processed /
    their sum; `send(i, d_i)` is what client i sends for d_i (as it is, or compressed)."""
    ds, taus, ps = [], [], []
    sgd = PlainSgd(keras_fn, LR)
    for data in rounds_data:
        sgd.load(x)
        batches = list(to_batches(data))
        for b in batches:
            sgd.step(b['x'], b['y'])
        taus.append(len(batches))
        ps.append(sum(int(b['y'].shape[0]) for b in batches))
        ds.append(send(len(ds), [(a - v) / len(batches) for a, v in zip(x, sgd.weights())]))
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


def _topk_aggregator(fraction):
    from fl_tff.aggregators import chain
    from fl_tff.communication.compression import COMPRESSIONS
    return chain.build([(COMPRESSIONS.get('topk').aggregator_layer,
                         {'compression_k': fraction})], chain.Context(uniform=False))


def test_with_top_k_two_rounds_equal_the_normalized_update_of_compressed_deltas(
        tff_runtime, setup, keras_fn):
    """Compression acts on what FedNova's model aggregator averages, the normalized deltas d_i;
    w_i tau_i and w_i go beside them uncompressed. Checked against the paper's rule with NumPy
    top-k of each d_i (top-k of w_i d_i keeps the same entries)."""
    model_fn, select = setup
    fraction = 0.3
    process = build_fednova(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0),
                            model_aggregator=_topk_aggregator(fraction))
    assert isinstance(process, tff.learning.templates.LearningProcess)  # No client state.
    initial = process.get_model_weights(process.initialize())
    weights, _ = run_rounds(process, select, 2)
    x = [np.asarray(t) for t in initial.trainable]
    for r in (1, 2):
        x = _plain_round(keras_fn, x, client_rounds(select, r),
                         send=lambda i, d: [numpy_top_k(t, fraction) for t in d])
    assert max_abs_diff(weights.trainable, x) <= 1e-5
    uncompressed, _ = run_rounds(build_fednova(model_fn, client_optimizer=SGD(LR),
                                               server_optimizer=SGD(1.0)), select, 2)
    assert max_abs_diff(weights.trainable, uncompressed.trainable) > 1e-4  # Top-k acted.


def test_with_error_feedback_each_client_sends_top_k_of_its_delta_plus_residual(
        tff_runtime, setup, keras_fn):
    """Error feedback joins FedNova as a client-state slot: client i sends top-k(d_i + e_i) and
    keeps the rest as e_i (the paper's rule with that compression written plainly)."""
    from fl_tff.communication.error_feedback import ErrorFeedback
    model_fn, select = setup
    fraction = 0.3
    process = build_fednova(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0),
                            error_feedback=ErrorFeedback('topk', fraction))
    assert process.slots == ('residual',)
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_state_slots(process, select, 3)

    x, residuals = [np.asarray(t) for t in initial.trainable], {}
    for r in (1, 2, 3):
        plan = select.plan(r)
        ids = [c for c, _ in plan.participants]

        def send(i, d):
            corrected = [a + b for a, b in zip(d, residuals.get(ids[i], [0.0] * len(d)))]
            sent = [numpy_top_k(t, fraction) for t in corrected]
            residuals[ids[i]] = [c - s for c, s in zip(corrected, sent)]
            return sent
        x = _plain_round(keras_fn, x, plan_rounds(select, plan), send)
    assert max(np.abs(t).max() for e in residuals.values() for t in e) > 1e-3  # Owed mass.
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff([stored[('residual', c)] for c in residuals],
                        [residuals[c] for c in residuals]) <= 1e-5


def test_compression_combines_and_the_ledger_bills_the_two_side_values():
    """FedNova + top-k is a valid run now; each client's upload is top-k's of the update plus
    w_i tau_i and w_i as two float32 values (counted by hand)."""
    import math
    from fl_tff import round_hooks
    from fl_tff.config import ExperimentConfig
    shapes = [(64, 10), (10,)]
    weights = tff.learning.models.ModelWeights([np.zeros(s, np.float32) for s in shapes], [])

    def per_client(**settings):
        config = ExperimentConfig(model='logreg', compression='topk', compression_k=0.1,
                                  **settings)
        config.validate()
        return round_hooks.build_communication_ledger(config, weights).uplink_client_bytes

    kept = [math.ceil(0.1 * 640), math.ceil(0.1 * 10)]
    index_bits = [math.ceil(math.log2(640)), math.ceil(math.log2(10))]
    topk_bits = 32 + sum(k * (32 + b) for k, b in zip(kept, index_bits))  # + the weight.
    assert per_client(algorithm='fedavg') == math.ceil(topk_bits / 8)
    assert per_client(algorithm='fednova') == math.ceil(topk_bits / 8) + 8
    assert per_client(algorithm='fednova', error_feedback=True) == math.ceil(topk_bits / 8) + 8
