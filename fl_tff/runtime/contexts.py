"""The execution contexts fl_tff installs: the local runtime over its own worker, remote
workers through TFF's mergeable context, and the process-wide `start()` / `stop()`."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Optional

import grpc
import tensorflow_federated as tff

from fl_tff.runtime import remote_rounds
from fl_tff.runtime.addresses import check_workers_reachable
from fl_tff.runtime.worker_process import GRPC_OPTIONS, WorkerProcess

_log = logging.getLogger(__name__)


def compile_with_secure_intrinsics(comp):
    """Compiles `comp` for the native runtime, lowering secure-sum intrinsics to plain sums."""
    comp = tff.backends.test.replace_secure_intrinsics_with_bodies(comp)
    return tff.backends.native.desugar_and_transform_to_native(comp)


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
        self._channel = grpc.insecure_channel(self._worker.address, GRPC_OPTIONS)
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
        self._channels = [grpc.insecure_channel(a, GRPC_OPTIONS) for a in self.addresses]
        self._counters = [_BytesSent() for _ in self._channels]
        contexts = [self._context(grpc.intercept_channel(channel, counter))
                    for channel, counter in zip(self._channels, self._counters)]
        if self._merge_on_driver:
            self._merger = WorkerProcess(log_path=self._log_path).start()
            self._channels.append(grpc.insecure_channel(self._merger.address, GRPC_OPTIONS))
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
