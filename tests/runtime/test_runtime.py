"""The fl_tff runtime owns TFF's worker: it is gone after every way the process can end."""

import os
import textwrap

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import runtime
from tests.helpers import live_worker_pids, run_python, wait_for_exit

_CHILD = textwrap.dedent('''
    import os, signal, sys, time
    import numpy as np
    import tensorflow_federated as tff
    from fl_tff import runtime

    rt = runtime.start()

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    print(rt.worker_pid, flush=True)
    mode = sys.argv[1]
    if mode == 'exception':
        raise RuntimeError('boom')
    if mode == 'context_manager':
        runtime.stop()
        with runtime.local_runtime() as rt2:
            print(rt2.worker_pid, flush=True)
            assert add_one(2) == 3
    if mode == 'SIGINT':
        # As in a terminal: a shell starting background jobs makes them ignore SIGINT.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if mode in ('SIGINT', 'SIGTERM', 'SIGKILL'):
        os.kill(os.getpid(), getattr(signal, mode))
        time.sleep(60)
''')


@pytest.mark.parametrize('mode', ['normal', 'exception', 'context_manager', 'SIGINT', 'SIGTERM',
                                  'SIGKILL'])
def test_worker_stopped_on_every_exit_path(mode):
    # Output goes to pipes: a leaked worker holding them would make this call time out.
    result = run_python(['-c', _CHILD, mode], timeout=180)
    pids = [int(line) for line in result.stdout.split()]
    assert pids, f'child printed no worker pid; stderr:\n{result.stderr[-2000:]}'
    if mode in ('normal', 'context_manager'):
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        assert result.returncode != 0
    for pid in pids:
        assert wait_for_exit(pid, timeout=10), f'worker {pid} survived exit path {mode}'


def test_secure_sum_intrinsics_execute(tff_runtime):
    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def secure_sum(values):
        return tff.federated_secure_sum_bitwidth(values, 8)

    assert secure_sum([1, 2, 3, 4]) == 10

    process = tff.aggregators.SecureSumFactory(upper_bound_threshold=10.0).create(
        tff.TensorType(np.float32))
    output = process.next(process.initialize(), [1.5, 2.0, 3.0])
    assert output.result == pytest.approx(6.5)


def test_separate_runtime_stops_cleanly_and_leaves_default_runtime_working(tff_runtime):
    other = runtime.LocalRuntime().start()
    pid = other.worker_pid
    other.stop()
    assert wait_for_exit(pid)

    @tff.tensorflow.computation(np.int32)
    def double(x):
        return x * 2

    with pytest.raises(RuntimeError, match='runtime has been stopped'):
        double(3)
    tff_runtime.install()
    assert double(3) == 6
    assert pid not in live_worker_pids()


def _environment(pid: int) -> dict[str, str]:
    with open(f'/proc/{pid}/environ', 'rb') as f:
        pairs = [item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_the_worker_runs_one_thread_per_op_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv('TF_NUM_INTRAOP_THREADS', raising=False)
    workers = []
    try:
        workers.append(runtime.WorkerProcess().start())
        workers.append(runtime.WorkerProcess(intra_op_threads=None).start())
        monkeypatch.setenv('TF_NUM_INTRAOP_THREADS', '2')  # The user's own setting wins.
        workers.append(runtime.WorkerProcess().start())
        first, tf_default, users = (_environment(w.pid) for w in workers)
        assert first['TF_NUM_INTRAOP_THREADS'] == '1'
        assert 'TF_NUM_INTRAOP_THREADS' not in tf_default
        assert users['TF_NUM_INTRAOP_THREADS'] == '2'
    finally:
        for worker in workers:
            worker.stop()


def test_a_worker_given_cpus_runs_every_thread_on_them_and_others_are_refused():
    ours = os.sched_getaffinity(0)
    first = min(ours)
    worker = runtime.WorkerProcess(cpus={first}).start()
    try:
        threads = os.listdir(f'/proc/{worker.pid}/task')
        assert len(threads) > 1  # gRPC's and TensorFlow's threads, started by the worker itself.
        assert {frozenset(os.sched_getaffinity(int(t))) for t in threads} == {frozenset({first})}
        assert os.sched_getaffinity(0) == ours  # Only the worker's thread of ours was pinned.
    finally:
        worker.stop()
    with pytest.raises(ValueError, match='not all among this process'):
        runtime.WorkerProcess(cpus={max(os.sched_getaffinity(0)) + 1})
    with pytest.raises(ValueError, match='not all among this process'):
        runtime.WorkerProcess(cpus=set())


_IMPORT_AND_RUN = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow_federated as tff
    import fl_tff.config  # Imports the runtime, which replaces TFF's stock context.
    from fl_tff import runtime
    if sys.argv[1] == 'run':
        @tff.tensorflow.computation(np.int32)
        def add_one(x):
            return x + 1
        assert add_one(1) == 2
        print(runtime.current().worker_pid, flush=True)
''')


@pytest.mark.parametrize('mode', ['import_only', 'run'])
def test_importing_fl_tff_leaves_no_exit_traceback_and_runs_computations_in_its_own_runtime(mode):
    """TFF's stock context printed a ServiceManager.__del__ traceback at exit after any script
    that imported fl_tff (or --helpfull); a computation run without `runtime.start()` now starts
    fl_tff's own runtime, whose worker does not outlive the script."""
    result = run_python(['-c', _IMPORT_AND_RUN, mode], timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Exception ignored' not in result.stderr and 'Traceback' not in result.stderr, (
        result.stderr[-2000:])
    for pid in (int(line) for line in result.stdout.split()):
        assert wait_for_exit(pid, timeout=10), f'worker {pid} outlived the script'
    assert len(result.stdout.split()) == (1 if mode == 'run' else 0)


def test_a_worker_whose_owner_is_garbage_collected_is_stopped_and_its_temporary_log_removed():
    """Cleanup is tied to the `WorkerProcess` object (weakref.finalize), not a process-wide
    atexit hook: dropping the last reference stops the worker."""
    import gc
    worker = runtime.WorkerProcess().start()
    pid, log_path = worker.pid, worker.log_path
    assert os.path.exists(log_path)
    del worker
    gc.collect()
    assert wait_for_exit(pid, timeout=15), f'worker {pid} outlived its WorkerProcess'
    assert not os.path.exists(log_path)


def test_importing_fl_tff_and_starting_a_worker_change_no_signal_handler_of_the_host():
    """A notebook or an application keeps its own handlers; only the drivers (`experiments.cli`)
    turn SIGTERM into SystemExit."""
    import importlib
    import signal
    import fl_tff
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    before = {s: signal.getsignal(s) for s in handled}
    importlib.reload(fl_tff)
    worker = runtime.WorkerProcess().start()
    try:
        assert {s: signal.getsignal(s) for s in handled} == before
    finally:
        worker.stop()
    assert {s: signal.getsignal(s) for s in handled} == before
