"""fl_tff owns TFF's execution: one local C++ worker whose lifetime is tied to ours (or, with
`--workers`, remote workers through TFF's mergeable context, see `RemoteRuntime`).

TFF's stock local context starts `worker_binary` with `subprocess.Popen`, hands it our
stdout/stderr and never stops it when Python exits, so `python x.py | cat` hangs. Here we
start the worker ourselves:

* under a parent-death signal (`setpriv --pdeathsig KILL`, or `prctl` as a fallback), so the
  kernel kills it whenever this process dies, SIGKILL included;
* from a long-lived keeper thread, because the parent-death signal fires when the *thread*
  that forked the child exits;
* with its output sent to a log file, never to our stdout;
* in its own session, so a terminal's Ctrl-C (SIGINT to the foreground process group) reaches
  only us: we stop it ourselves, after reporting where the run can resume;
* stopped by `stop()`, by `atexit` and by the context manager's exit. The drivers turn
  SIGTERM into `SystemExit` (`install_sigterm_as_exit`) so those paths also run on `kill PID`;
  the library itself changes no signal handler of its host (a notebook, an application).

The execution context also compiles TFF's secure-sum intrinsics into plain sums
(`tff.backends.test.replace_secure_intrinsics_with_bodies`), which the stock native context
rejects. Open-source TFF performs no cryptography in simulation; the structure of a computation
(the server sees only the sum) is what secure aggregation guarantees here.

Usage::

    from fl_tff import runtime
    with runtime.local_runtime():
        state = process.initialize()

or `runtime.start()` once (it is stopped at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Optional

import grpc
import portpicker
import tensorflow_federated as tff

from fl_tff import remote_rounds, tff_compat

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]
_STARTUP_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1

_log = logging.getLogger(__name__)


def worker_binary_path() -> str:
    """Returns the path of the `worker_binary` shipped inside the TFF package."""
    path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
    if not os.path.isfile(path):
        raise RuntimeError(f'TFF worker binary not found at {path}; is tensorflow-federated installed?')
    return path


def _set_parent_death_signal() -> None:  # Runs in the child between fork and exec.
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def compile_with_secure_intrinsics(comp):
    """Compiles `comp` for the native runtime, lowering secure-sum intrinsics to plain sums."""
    comp = tff.backends.test.replace_secure_intrinsics_with_bodies(comp)
    return tff.backends.native.desugar_and_transform_to_native(comp)


class WorkerProcess:
    """One TFF `worker_binary` (a gRPC executor service) started and owned by this process:
    killed by the kernel if we die (parent-death signal), stopped by `stop()` and at exit.

    Args:
      port: Where it listens (default: a free port).
      log_path: Where its stdout and stderr go (default: a temporary file, removed when the
        worker stops).
      max_concurrent_computation_calls: The worker's flag of that name (-1: no limit).
      intra_op_threads: TensorFlow's threads per op inside the worker
        (`TF_NUM_INTRAOP_THREADS`). 1 by default: the worker already runs a round's clients
        concurrently, and a client step's ops are too small to split, so TF's default (a
        thread per core for every op) only adds hand-offs. With the 2NN on this 2-core
        machine a K = 10 round took 0.25 s against 0.38 s (`benchmarks/round_time.py`).
        None keeps TF's default; a `TF_NUM_INTRAOP_THREADS` already in the environment wins.
    """

    def __init__(self, *, port: Optional[int] = None, log_path: Optional[str] = None,
                 max_concurrent_computation_calls: int = -1,
                 intra_op_threads: Optional[int] = 1):
        self.port = port
        self.log_path = log_path
        self._max_concurrent = max_concurrent_computation_calls
        self._intra_op_threads = intra_op_threads
        self._process: Optional[subprocess.Popen] = None
        self._log_file = None
        self._temporary_log = False

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

    def _spawn(self, args: list[str], started: threading.Event, box: dict) -> None:
        # The parent-death signal is tied to the forking thread: this thread lives as long
        # as the worker, so the signal only fires when the whole process dies.
        environment = dict(os.environ)
        if self._intra_op_threads is not None:
            environment.setdefault('TF_NUM_INTRAOP_THREADS', str(self._intra_op_threads))
        try:
            setpriv = shutil.which('setpriv')
            if setpriv:
                box['process'] = subprocess.Popen(
                    [setpriv, '--pdeathsig', 'KILL', *args], stdin=subprocess.DEVNULL,
                    stdout=self._log_file, stderr=subprocess.STDOUT, close_fds=True,
                    start_new_session=True, env=environment)
            else:
                box['process'] = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=self._log_file,
                    stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
                    preexec_fn=_set_parent_death_signal, env=environment)
        except BaseException as e:  # Reported to the starting thread.
            box['error'] = e
        finally:
            started.set()
        if 'process' in box:
            box['process'].wait()

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
        started, box = threading.Event(), {}
        threading.Thread(target=self._spawn, args=(args, started, box),
                         name=f'fl_tff-worker-{self.port}', daemon=True).start()
        started.wait()
        if 'error' in box:
            self._log_file.close()
            raise RuntimeError(f'could not start TFF worker_binary: {box["error"]}') from box['error']
        self._process = box['process']
        atexit.register(self.stop)
        try:
            self._wait_until_serving()
        except BaseException:
            self._temporary_log = False  # The error names the log: it stays.
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
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temporary_log:  # A log the caller did not ask to keep leaves no file behind.
            with contextlib.suppress(OSError):
                os.remove(self.log_path)
            self.log_path, self._temporary_log = None, False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _remote_executor_factory(channel: grpc.Channel, default_clients: int,
                             executor_class: type = tff.framework.RemoteExecutor,
                             created: Optional[list] = None):
    """TFF's executor factory over `channel`: one `executor_class` per cardinality (each also
    appended to `created`, so that its owner can close them)."""
    stub = tff.framework.RemoteExecutorGrpcStub(channel)

    def stack_fn(cardinalities):
        if cardinalities.get(tff.CLIENTS) is None:
            cardinalities[tff.CLIENTS] = default_clients
        executor = executor_class(stub)
        if created is not None:
            created.append(executor)
        executor.set_cardinalities(cardinalities)
        return executor

    return tff.framework.ResourceManagingExecutorFactory(stack_fn)


_CONTEXT_ARGS = dict(transform_args=tff.tensorflow.transform_args,
                     transform_result=tff.tensorflow.transform_result)


class LocalRuntime:
    """A `WorkerProcess` owned by this process, plus the TFF context that uses it."""

    def __init__(
        self,
        *,
        max_concurrent_computation_calls: int = -1,
        default_num_clients: int = 0,
        log_path: Optional[str] = None,
    ):
        self._worker = WorkerProcess(log_path=log_path,
                                     max_concurrent_computation_calls=max_concurrent_computation_calls)
        self._default_num_clients = default_num_clients
        self._channel: Optional[grpc.Channel] = None
        self.context: Optional[tff.framework.SyncExecutionContext] = None

    @property
    def worker_pid(self) -> Optional[int]:
        """PID of the running worker, or None when it is not running."""
        return self._worker.pid

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the workers this runtime owns."""
        return [self._worker.pid] if self._worker.pid else []

    @property
    def port(self) -> Optional[int]:
        return self._worker.port

    @property
    def address(self) -> str:
        """host:port of the running worker."""
        return self._worker.address

    @property
    def log_path(self) -> Optional[str]:
        """Where the worker's stdout and stderr go."""
        return self._worker.log_path

    def start(self) -> 'LocalRuntime':
        """Starts the worker, waits until it serves, and installs the execution context."""
        if self._worker.pid is not None:
            return self
        self._worker.start()
        self._channel = grpc.insecure_channel(self._worker.address, _GRPC_OPTIONS)
        self.context = tff.framework.SyncExecutionContext(
            executor_fn=_remote_executor_factory(self._channel, self._default_num_clients),
            compiler_fn=compile_with_secure_intrinsics, **_CONTEXT_ARGS)
        self.install()
        _log.info('TFF worker_binary pid %d on port %d (log: %s)', self.worker_pid, self.port,
                  self.log_path)
        return self

    def install(self) -> None:
        """Makes this runtime TFF's default context in the calling thread (TFF's stack is thread-local)."""
        _install(self.context, 'the fl_tff runtime')

    def stop(self) -> None:
        """Stops the worker and uninstalls the context. Idempotent."""
        _uninstall(self.context)
        self.context = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._worker.stop()


class _BytesSent(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Counts the serialized bytes of every request sent on a channel (gRPC's Python API has
    no per-channel byte counters; the requests are protobufs, which know their size)."""

    def __init__(self):
        self.total = 0
        self._lock = threading.Lock()

    def _count(self, request) -> None:
        with self._lock:
            self.total += request.ByteSize()

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self._count(request)
        return continuation(client_call_details, request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        def counted():
            for request in request_iterator:
                self._count(request)
                yield request
        return continuation(client_call_details, counted())


class RemoteRuntime:
    """Runs computations on running `worker_binary` services at `addresses` ("host:port")
    through TFF's mergeable execution context: each round's clients are split into one
    sub-round per worker and the partial aggregates merged (TFF's mergeable form, which
    covers computations with one aggregation layer; secure sums do not compile to it).
    The workers belong to whoever started them (e.g. `experiments.launch_workers`).
    `bytes_sent()` counts what this process sent to each worker.

    Each worker receives each distinct computation once (`remote_rounds.CachingRemoteExecutor`).
    With `merge_on_driver`, the merge of partial aggregates and the server update run on a
    worker of this process's own (`remote_rounds.MergingContext`), so the remote workers
    receive only the model state and their clients' tasks each round; its output goes to
    `log_path`.
    """

    def __init__(self, addresses: list[str], *, default_num_clients: int = 0,
                 num_subrounds: Optional[int] = None, merge_on_driver: bool = False,
                 log_path: Optional[str] = None):
        if not addresses:
            raise ValueError('RemoteRuntime needs at least one worker address')
        self.addresses = list(addresses)
        self._num_subrounds = num_subrounds
        self._default_num_clients = default_num_clients
        self._merge_on_driver, self._log_path = merge_on_driver, log_path
        self._channels: list[grpc.Channel] = []
        self._counters: list[_BytesSent] = []
        self._merger: Optional[WorkerProcess] = None
        self._executors: list = []  # Closed before the channels: they hold cached values.
        self.context = None

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the workers this runtime owns (the merging worker, if any)."""
        return [self._merger.pid] if self._merger is not None and self._merger.pid else []

    def _context(self, channel: grpc.Channel) -> tff.framework.AsyncExecutionContext:
        return tff.framework.AsyncExecutionContext(
            executor_fn=_remote_executor_factory(channel, self._default_num_clients,
                                                 remote_rounds.CachingRemoteExecutor,
                                                 self._executors),
            compiler_fn=tff.backends.native.desugar_and_transform_to_native, **_CONTEXT_ARGS)

    def start(self) -> 'RemoteRuntime':
        """Checks every worker accepts connections, then installs the mergeable context."""
        check_workers_reachable(self.addresses)
        self._channels = [grpc.insecure_channel(a, _GRPC_OPTIONS) for a in self.addresses]
        self._counters = [_BytesSent() for _ in self._channels]
        contexts = [self._context(grpc.intercept_channel(channel, counter))
                    for channel, counter in zip(self._channels, self._counters)]
        if self._merge_on_driver:
            self._merger = WorkerProcess(log_path=self._log_path).start()
            self._channels.append(grpc.insecure_channel(self._merger.address, _GRPC_OPTIONS))
            self.context = remote_rounds.MergingContext(
                contexts, self._context(self._channels[-1]), num_subrounds=self._num_subrounds)
        else:
            self.context = tff.backends.native.create_mergeable_comp_execution_context(
                contexts, num_subrounds=self._num_subrounds)
        self.install()
        return self

    def install(self) -> None:
        """Makes this runtime TFF's default context in the calling thread."""
        _install(self.context, 'the remote runtime')

    def bytes_sent(self) -> list[int]:
        """Serialized request bytes sent so far to each worker, in `addresses` order."""
        return [counter.total for counter in self._counters]

    def stop(self) -> None:
        """Uninstalls the context and closes the connections; the remote workers keep running,
        the merging worker of its own stops."""
        _uninstall(self.context)
        self.context = None
        for executor in self._executors:  # Their values on the workers go while we can reach them.
            with contextlib.suppress(grpc.RpcError, ValueError):
                executor.close()
        self._executors = []
        for channel in self._channels:
            channel.close()
        self._channels = []
        if self._merger is not None:
            self._merger.stop()
            self._merger = None


def _install(context, what: str) -> None:
    if context is None:
        raise RuntimeError(f'{what} is not running; call start() first')
    tff.framework.set_default_context(context)


def _uninstall(context) -> None:
    if context is not None and tff.framework.get_context_stack().current is context:
        tff.framework.set_default_context(_StoppedContext())


class _StoppedContext(tff.framework.SyncContext):
    """Installed after `stop()`: invoking fails clearly instead of starting a stray TFF worker."""

    def invoke(self, comp, arg):
        raise RuntimeError('the fl_tff runtime has been stopped; call fl_tff.runtime.start() '
                           'or use fl_tff.runtime.local_runtime() before running a computation')


class _StartsOnFirstUse(tff.framework.SyncContext):
    """Installed in place of TFF's stock local context when fl_tff is imported (in the importing
    thread). TFF's starts a `worker_binary` that outlives the process, and when nothing replaced
    it, it is collected at interpreter shutdown, where its `__del__` prints an "Exception
    ignored" traceback (after `--helpfull`, or any script that imports fl_tff and exits). The
    first computation run through this one starts fl_tff's own runtime (`start()`), which then
    runs it and every later one."""

    def invoke(self, comp, arg):
        start()
        return tff.framework.get_context_stack().current.invoke(comp, arg)


def _replace_stock_context() -> None:
    """Puts `_StartsOnFirstUse` where TFF's stock execution context is (see there)."""
    current = tff.framework.get_context_stack().current
    if _current is None and isinstance(current, tff.framework.SyncExecutionContext):
        tff.framework.set_default_context(_StartsOnFirstUse())


def drop_stock_context() -> None:
    """Replaces whatever context is installed in this thread with one that refuses to run.

    Drivers call it on their way out: TFF installs its stock local context at import, and when
    no run replaced it (a run refused before it started) it is collected at interpreter shutdown,
    where its `__del__` prints an "Exception ignored" traceback.
    """
    if _current is None:
        tff.framework.set_default_context(_StoppedContext())


def _raise_system_exit(signum, frame):  # pylint: disable=unused-argument
    raise SystemExit(128 + signum)


def install_sigterm_as_exit() -> None:
    """Turns SIGTERM into SystemExit so finally blocks and atexit run, and the worker is stopped
    (main thread only; a handler the program set is kept). Called by the drivers: the library
    leaves its host's signal handlers alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise_system_exit)


_current: Optional[LocalRuntime] = None
_lock = threading.Lock()


def start(**kwargs) -> LocalRuntime:
    """Starts (once per process) the fl_tff runtime and installs its context; returns it.

    Keyword arguments go to `LocalRuntime`. A running runtime is reused (and installed in the
    calling thread).
    """
    global _current
    with _lock:
        if _current is None or _current.worker_pid is None:
            _current = LocalRuntime(**kwargs).start()
        else:
            _current.install()
        return _current


def stop() -> None:
    """Stops the process-wide runtime, if any."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


def current() -> Optional[LocalRuntime]:
    """The running process-wide runtime, or None."""
    return _current


_replace_stock_context()


@contextlib.contextmanager
def local_runtime(**kwargs) -> Iterator[LocalRuntime]:
    """Context manager: a running runtime inside, stopped on exit (exceptions included)."""
    owned = _current is None
    rt = start(**kwargs)
    try:
        yield rt
    finally:
        if owned:
            stop()


@contextlib.contextmanager
def runtime_for(workers: Sequence[str] = (), subrounds: int = 1,
                **kwargs) -> Iterator[LocalRuntime | RemoteRuntime]:
    """The local runtime (no `workers`), or a `RemoteRuntime` over the `workers` addresses,
    installed inside the block and stopped (uninstalled) on exit.

    With `subrounds` > 1 each round runs as that many sequential sub-rounds per worker through
    TFF's mergeable context (partial aggregates merged): a cohort's clients are not all held
    by a worker at once. Locally the mergeable context drives this process's own worker; with
    `workers`, a worker of this process's own merges the partial aggregates and finishes each
    round (its output goes to `log_path` among `kwargs`).
    """
    if not workers:
        with local_runtime(**kwargs) as rt:
            if subrounds <= 1:
                yield rt
                return
            split = RemoteRuntime([rt.address], num_subrounds=subrounds).start()
            try:
                yield rt
            finally:
                split.stop()
                rt.install()
        return
    rt = RemoteRuntime(list(workers),
                       num_subrounds=subrounds * len(workers) if subrounds > 1 else None,
                       merge_on_driver=True, log_path=kwargs.get('log_path')).start()
    try:
        yield rt
    finally:
        rt.stop()
        if _current is not None:
            _current.install()


class WorkerUnreachableError(ConnectionError):
    """Nothing accepts connections at a worker address."""


def check_workers_reachable(addresses: Sequence[str], timeout: float = 5.0) -> None:
    """Raises WorkerUnreachableError naming the first address that refuses a TCP connection."""
    for address in addresses:
        host, _, port = address.rpartition(':')
        try:
            socket.create_connection((host, int(port)), timeout).close()
        except OSError as e:
            raise WorkerUnreachableError(
                f'no TFF worker at {address} ({e.strerror or e}); start workers with `python -m '
                'experiments.launch_workers` and pass the --workers= value it prints') from e


def parse_workers(text: str) -> list[str]:
    """"host:port,host:port" as a list; ValueError naming a malformed entry."""
    addresses = [a.strip() for a in text.split(',') if a.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(':')
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'{address!r} is not host:port (e.g. 127.0.0.1:8000)')
    if len(set(addresses)) != len(addresses):
        raise ValueError('the same worker is listed twice')
    return addresses


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone). Used by tests and tools."""
    import psutil  # Local import: only tests and tools need it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def run_coroutine(coroutine):
    """Runs `coroutine` to completion on this thread's private event loop, with Ctrl-C deferred
    until it ends.

    Our coroutines are tff.program's checkpoint and release writes, which run in executor
    threads: a `KeyboardInterrupt` in the middle leaves them writing behind the caller's back and
    asyncio logging tracebacks about abandoned tasks. They take well under a second, so a Ctrl-C
    that arrives meanwhile is raised when they are done.

    Unlike `asyncio.run`, it leaves the thread's current event loop alone: `asyncio.run` ends by
    setting it to None, after which TFF's own `tff.simulation.run_training_process` (which calls
    `asyncio.get_event_loop()`) fails with "There is no current event loop". When this thread
    already runs a loop (a Jupyter cell runs inside the kernel's), that loop is set aside while the
    private one runs in the same thread, and put back after: the caller is synchronous, so the
    outer loop could not run meanwhile anyway.

    The private loop, and so its executor threads, live as long as the thread: a new loop per
    call would write each checkpoint from a new thread, and Jupyter's kernel opens a socket for
    every thread that prints (TensorFlow logs each SavedModel it writes) and polls them all, which
    slowed a notebook's checkpoint writes to minutes and ran out of file descriptors.
    """
    loop = getattr(_PRIVATE, 'loop', None)
    if loop is None or loop.is_closed():
        loop = _PRIVATE.loop = asyncio.new_event_loop()
        # One writer thread: the writes are small and one coroutine runs at a time anyway.
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix='fl_tff-writes'))
        atexit.register(loop.close)
    outer = tff_compat.swap_running_loop(None)
    try:
        with _sigint_deferred():
            return loop.run_until_complete(coroutine)
    finally:
        tff_compat.swap_running_loop(outer)


_PRIVATE = threading.local()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds back SIGINT inside the block (main thread only) and delivers it at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, received[0])
