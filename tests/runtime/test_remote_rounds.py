"""What remote workers receive: each computation once per executor, and no merge work when the
driver merges (`fl_tff.runtime.remote_rounds`; end to end in tests/experiments/test_workers.py)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import runtime


@pytest.fixture
def worker():
    process = runtime.WorkerProcess().start()
    yield process
    process.stop()


def _calls(rt, comp, args):
    """The result and the bytes sent to each worker, per call."""
    out = []
    for arg in args:
        before = rt.bytes_sent()
        result = comp(arg)
        out.append((result, [b - a for a, b in zip(before, rt.bytes_sent())]))
    return out


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _total(values):
    return tff.federated_sum(values)


@pytest.mark.parametrize('merge_on_driver', [False, True])
def test_a_computation_reaches_its_worker_once_per_executor(tff_runtime, worker, merge_on_driver):
    rt = runtime.RemoteRuntime([worker.address], merge_on_driver=merge_on_driver).start()
    try:
        first, again, other = _calls(rt, _total, [[1.0, 2.0], [3.0, 4.0], [1.0, 2.0, 3.0]])
        assert rt.worker_pids == ([rt._merger.pid] if merge_on_driver else [])
    finally:
        rt.stop()
        tff_runtime.install()
    assert [first[0], again[0], other[0]] == [3.0, 7.0, 6.0]
    # The second call (same cardinality, the same executor) sends no computation again; three
    # clients are a new executor on the worker, which gets the computation anew.
    assert again[1][0] < first[1][0] / 2
    assert other[1][0] > 2 * again[1][0]


def test_merging_on_the_driver_leaves_the_workers_only_their_sub_rounds(tff_runtime, worker):
    other = runtime.WorkerProcess().start()
    addresses = [worker.address, other.address]
    sent = {}
    try:
        for merge_on_driver in (False, True):
            rt = runtime.RemoteRuntime(addresses, merge_on_driver=merge_on_driver).start()
            try:
                calls = _calls(rt, _total, [[1.0, 2.0, 3.0, 4.0]] * 3)
            finally:
                rt.stop()
                tff_runtime.install()
            assert [result for result, _ in calls] == [10.0] * 3
            sent[merge_on_driver] = calls[-1][1]
    finally:
        other.stop()
    # TFF's context sends the merge steps to one of the workers (over 4x the other's bytes
    # here); merged on the driver, each worker receives about what the other one did there:
    # its clients' values and a call (value ids vary the sizes by a few bytes).
    assert max(sent[False]) > 4 * min(sent[False])
    assert max(sent[True]) < 1.2 * min(sent[False]) and max(sent[True]) < 1.2 * min(sent[True])
