"""Each benchmark workload runs one tiny round through fl_tff on TFF's runtime and through the
plain-TF bound, and both compute the same round: with one batch per client (no dropout) the two
models agree (the bound does the same work, not less)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from benchmarks import workload
from fl_tff.algorithms import build_fedavg


@pytest.mark.parametrize('name', list(workload.WORKLOADS))
def test_each_workload_runs_a_round_that_the_plain_bound_matches(tff_runtime, tmp_path, name):
    spec = workload.WORKLOADS[name]
    data = workload.ClientsData(spec, 2, spec.batch, str(tmp_path))  # One step per client.
    sgd = tff.learning.optimizers.build_sgdm
    process = data.compose(build_fedavg(spec.model_fn(), client_optimizer=sgd(spec.learning_rate),
                                        server_optimizer=sgd(1.0)))
    state = process.initialize()
    before = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    after = process.get_model_weights(process.next(state, data.select(1)).state).trainable
    plain = workload.plain_round(data, xla=False, initial_weights=before)
    plain()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(after, before))
    assert moved > 1e-4
    difference = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(after, plain.weights()))
    if 'dropout' in [layer.__class__.__name__.lower() for layer in spec.keras_fn().layers]:
        assert difference < moved  # Different dropout masks: only the scale is comparable.
    else:
        assert difference <= 1e-5 * max(1.0, moved), (difference, moved)
