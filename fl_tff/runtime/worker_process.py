"""The TFF `worker_binary` this process starts and owns: tied to our lifetime by a
parent-death signal, its output in a log file, stopped by `stop()`, when its `WorkerProcess`
is garbage-collected, and at exit (see the package docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Collection
from typing import IO, Optional

import portpicker
import tensorflow_federated as tff

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]
_STARTUP_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def worker_binary_path() -> str:
    """Returns the path of the `worker_binary` shipped inside the TFF package."""
    path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
    if not os.path.isfile(path):
        raise RuntimeError(f'TFF worker binary not found at {path}; is tensorflow-federated installed?')
    return path


@dataclasses.dataclass
class _Owned:
    """What a started worker owns, released once by `_release` (a `weakref.finalize` callback:
    it must not refer to the `WorkerProcess`)."""
    process: subprocess.Popen
    log_file: IO[bytes]
    temporary_log_path: Optional[str]  # Removed on release; None keeps the log.


def _release(owned: _Owned) -> None:
    """Stops the worker (SIGTERM, then SIGKILL), closes its log and removes a temporary one."""
    if owned.process.poll() is None:
        owned.process.terminate()
        try:
            owned.process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            owned.process.kill()
            owned.process.wait()
    owned.log_file.close()
    if owned.temporary_log_path is not None:  # A log the caller did not ask to keep goes.
        with contextlib.suppress(OSError):
            os.remove(owned.temporary_log_path)


def _set_parent_death_signal() -> None:  # Runs in the child between fork and exec.
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(args: list[str], log_file: IO[bytes], environment: dict[str, str],
           started: threading.Event, box: dict, cpus: Optional[frozenset[int]] = None) -> None:
    """Starts the worker from the calling (keeper) thread and waits for it to end. The
    parent-death signal is tied to the forking thread: this thread lives as long as the worker,
    so the signal only fires when the whole process dies. It holds no reference to the
    `WorkerProcess`, which may so be garbage-collected (and stop its worker) while it runs.
    With `cpus`, this thread takes that CPU affinity first: the worker inherits it, every
    thread of it included."""
    try:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)  # This thread only (Linux: 0 is the calling thread).
        setpriv = shutil.which('setpriv')
        if setpriv:
            box['process'] = subprocess.Popen(
                [setpriv, '--pdeathsig', 'KILL', *args], stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, close_fds=True,
                start_new_session=True, env=environment)
        else:
            box['process'] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
                preexec_fn=_set_parent_death_signal, env=environment)
    except BaseException as e:  # Reported to the starting thread.
        box['error'] = e
    finally:
        started.set()
    if 'process' in box:
        box['process'].wait()


class WorkerProcess:
    """One TFF `worker_binary` (a gRPC executor service) started and owned by this process:
    killed by the kernel if we die (parent-death signal), stopped by `stop()`, when the object
    is garbage-collected and at interpreter exit. The last two go through `weakref.finalize`,
    tied to this object: the library registers no process-wide `atexit` hook of its own.

    Args:
      port: Where it listens (default: a free port).
      log_path: Where its stdout and stderr go (default: a temporary file, removed when the
        worker stops).
      max_concurrent_computation_calls: The worker's flag of that name (-1: no limit).
      cpus: The CPUs the worker (all its threads) may run on (default: any); e.g. one core per
        worker to measure how rounds scale over workers on one machine
        (`benchmarks.round_time --workers`).
      intra_op_threads: TensorFlow's threads per op inside the worker
        (`TF_NUM_INTRAOP_THREADS`). 1 by default: the worker already runs a round's clients
        concurrently, and a client step's ops are too small to split, so TF's default (a
        thread per core for every op) only adds hand-offs. With the 2NN on this 2-core
        machine a K = 10 round took 0.25 s against 0.38 s (`benchmarks/round_time.py`).
        None keeps TF's default; a `TF_NUM_INTRAOP_THREADS` already in the environment wins.
    """

    def __init__(self, *, port: Optional[int] = None, log_path: Optional[str] = None,
                 max_concurrent_computation_calls: int = -1,
                 intra_op_threads: Optional[int] = 1,
                 cpus: Optional[Collection[int]] = None):
        if cpus is not None and not (cpus and set(cpus) <= os.sched_getaffinity(0)):
            raise ValueError(f'cpus {sorted(cpus)} are not all among this process\'s CPUs '
                             f'{sorted(os.sched_getaffinity(0))}')
        self.cpus = frozenset(cpus) if cpus is not None else None
        self.port = port
        self.log_path = log_path
        self._max_concurrent = max_concurrent_computation_calls
        self._intra_op_threads = intra_op_threads
        self._process: Optional[subprocess.Popen] = None
        self._log_file = None
        self._temporary_log = False
        self._finalizer: Optional[weakref.finalize] = None

    @property
    def pid(self) -> Optional[int]:
        """PID of the running worker, or None when it is not running."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the worker process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def address(self) -> str:
        return f'127.0.0.1:{self.port}'

    def start(self) -> 'WorkerProcess':
        """Starts the worker and waits until it accepts connections."""
        if self._process is not None:
            return self
        self.port = self.port or portpicker.pick_unused_port()
        if self.log_path is None:  # Ours to remove when the worker stops.
            fd, self.log_path = tempfile.mkstemp(prefix='fl_tff_worker_', suffix='.log')
            os.close(fd)
            self._temporary_log = True
        self._log_file = open(self.log_path, 'ab')
        args = [worker_binary_path(), f'--port={self.port}',
                f'--max_concurrent_computation_calls={self._max_concurrent}']
        environment = dict(os.environ)
        if self._intra_op_threads is not None:
            environment.setdefault('TF_NUM_INTRAOP_THREADS', str(self._intra_op_threads))
        started, box = threading.Event(), {}
        threading.Thread(target=_spawn,
                         args=(args, self._log_file, environment, started, box, self.cpus),
                         name=f'fl_tff-worker-{self.port}', daemon=True).start()
        started.wait()
        if 'error' in box:
            self._log_file.close()
            raise RuntimeError(f'could not start TFF worker_binary: {box["error"]}') from box['error']
        self._process = box['process']
        self._owned = _Owned(self._process, self._log_file,
                             self.log_path if self._temporary_log else None)
        self._finalizer = weakref.finalize(self, _release, self._owned)
        try:
            self._wait_until_serving()
        except BaseException:
            self._temporary_log = False  # The error names the log: it stays.
            self._owned.temporary_log_path = None
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        # A plain TCP probe: grpc.channel_ready_future leaves a polling thread behind.
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f'TFF worker_binary exited with status {self._process.returncode}; '
                                   f'see {self.log_path}')
            with contextlib.suppress(OSError), socket.create_connection(('localhost', self.port), 1):
                return
            time.sleep(0.05)
        raise RuntimeError(f'TFF worker_binary did not listen on port {self.port} within '
                           f'{_STARTUP_TIMEOUT_SECONDS:.0f}s; see {self.log_path}')

    def stop(self) -> None:
        """Stops the worker (SIGTERM, then SIGKILL). Idempotent."""
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()  # Runs `_release` once; a finalizer that ran is dead.
        self._process, self._log_file = None, None
        if self._temporary_log:
            self.log_path, self._temporary_log = None, False
