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


class _BarrierStub:
    """A worker's gRPC stub whose `compute` returns only once the other worker's `compute` has
    been called too (a barrier of two): executors that wait for their workers one after
    another break it, and the test fails instead of waiting forever."""

    def __init__(self, barrier, result):
        self._barrier, self._result = barrier, result

    def get_executor(self, request):
        from tensorflow_federated.proto.v0 import executor_pb2
        return executor_pb2.GetExecutorResponse(executor=executor_pb2.ExecutorId(id='e'))

    def create_value(self, request):
        from tensorflow_federated.proto.v0 import executor_pb2
        return executor_pb2.CreateValueResponse(value_ref=executor_pb2.ValueRef(id='v'))

    def compute(self, request):
        self._barrier.wait(timeout=60)  # Raises BrokenBarrierError if the other never comes.
        from tensorflow_federated.proto.v0 import executor_pb2
        return executor_pb2.ComputeResponse(value=self._result)

    def dispose(self, request):
        pass

    def dispose_executor(self, request):
        pass


def test_more_workers_than_the_default_pool_compute_at_the_same_time():
    """The mergeable context awaits each worker's sub-round in its own task; TFF's executor
    blocked the event loop in each worker's `compute`, so the second worker started after the
    first had finished. The workers here outnumber the event loop's default thread pool
    (min(32, cores + 4)): each executor has threads of its own."""
    import asyncio
    import os
    import threading
    from fl_tff import tff_compat
    from fl_tff.runtime import remote_rounds
    workers = min(os.cpu_count() or 1, 27) + 5
    barrier = threading.Barrier(workers)
    result = tff_compat.serialize_value(np.float32(2.0), tff.TensorType(np.float32))
    executors = [remote_rounds.CachingRemoteExecutor(_BarrierStub(barrier, result))
                 for _ in range(workers)]
    for executor in executors:
        executor.set_cardinalities({tff.CLIENTS: 1})

    async def one(executor):
        value = await executor.create_value(np.float32(1.0), tff.TensorType(np.float32))
        return await value.compute()

    async def every():
        return await asyncio.gather(*(one(e) for e in executors))

    assert [float(v) for v in asyncio.run(every())] == [2.0] * workers
    assert not barrier.broken


class _UploadStub(_BarrierStub):
    """Counts the computations uploaded; each upload waits for `release`."""

    def __init__(self):
        import threading
        super().__init__(None, None)
        self.uploads, self.release = 0, threading.Event()

    def create_value(self, request):
        if request.value.HasField('computation'):
            self.uploads += 1
            assert self.release.wait(timeout=60)
        return super().create_value(request)


def test_a_computation_requested_twice_at_once_is_uploaded_once_and_a_reset_drops_it():
    import asyncio
    from fl_tff.runtime import remote_rounds
    stub = _UploadStub()
    executor = remote_rounds.CachingRemoteExecutor(stub)
    executor.set_cardinalities({tff.CLIENTS: 1})
    upload = lambda: executor.create_value(_total, _total.type_signature)

    async def concurrent_requests():
        first, second = asyncio.ensure_future(upload()), asyncio.ensure_future(upload())
        await asyncio.sleep(0.05)
        stub.release.set()
        return await first, await second

    first, second = asyncio.run(concurrent_requests())
    assert stub.uploads == 1 and first is second
    asyncio.run(upload())
    assert stub.uploads == 1  # Cached.

    async def reset_while_uploading():
        executor.set_cardinalities({tff.CLIENTS: 2})  # Empties the cache.
        stub.release.clear()
        request = asyncio.ensure_future(upload())
        await asyncio.sleep(0.05)
        executor.set_cardinalities({tff.CLIENTS: 3})  # A reset while the upload is in flight.
        stub.release.set()
        await request

    asyncio.run(reset_while_uploading())
    assert stub.uploads == 2
    asyncio.run(upload())  # The value uploaded before the reset belongs to the old executor.
    assert stub.uploads == 3
