"""MIME-lite on our pipeline (worker-built rounds handed over as batches, our selection) against
TFF's `build_weighted_mime_lite` fed the same batches built here."""

import numpy as np
import tensorflow_federated as tff

from fl_tff.algorithms.mimelite import build_mime_lite
from fl_tff.simulation import worker_data
from tests.helpers import max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05


def test_three_rounds_on_worker_built_batches_equal_tffs_builder(tff_runtime, setup):
    model_fn, select = setup
    ours = worker_data.compose(build_mime_lite(model_fn, mime_momentum=0.9, client_optimizer=SGD(LR)),
                               select.dataset_computation())
    reference = tff.learning.algorithms.build_weighted_mime_lite(
        model_fn, base_optimizer=SGD(LR, momentum=0.9), server_optimizer=SGD(1.0))
    state, ref_state = ours.initialize(), reference.initialize()
    initial = reference.get_model_weights(ref_state).trainable
    for r in range(1, 4):
        tasks = select(r)
        state = ours.next(state, tasks).state
        ref_state = reference.next(
            ref_state, [to_batches(select.client_round(t)) for t in tasks]).state
    trained = ours.get_model_weights(state).trainable
    assert max_abs_diff(trained, initial) > 1e-2
    assert max_abs_diff(trained, reference.get_model_weights(ref_state).trainable) <= 1e-5
    # The server's momentum state moved (MIME-lite, not FedAvg).
    assert max(float(np.abs(np.asarray(t)).max()) for t in
               tff.structure.flatten(state.client_work)) > 0
