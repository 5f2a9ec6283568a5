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
* stopped by `stop()`, by the context manager's exit, and when its `WorkerProcess` is
  garbage-collected or the interpreter exits (`weakref.finalize`, tied to the object: no
  process-wide `atexit` hook). The drivers turn SIGTERM into `SystemExit`
  (`install_sigterm_as_exit`) so those paths also run on `kill PID`; the library itself
  changes no signal handler of its host (a notebook, an application).

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

from fl_tff.runtime.addresses import (WorkerUnreachableError, check_workers_reachable,
                                      parse_workers)
from fl_tff.runtime.contexts import (LocalRuntime, RemoteRuntime, compile_with_secure_intrinsics,
                                     current, drop_stock_context, local_runtime, runtime_for,
                                     start, stop)
from fl_tff.runtime.event_loop import run_coroutine
from fl_tff.runtime.signals import install_sigterm_as_exit
from fl_tff.runtime.worker_process import WorkerProcess, worker_binary_path

__all__ = ['LocalRuntime', 'RemoteRuntime', 'WorkerProcess', 'WorkerUnreachableError',
           'check_workers_reachable', 'compile_with_secure_intrinsics', 'current',
           'drop_stock_context', 'install_sigterm_as_exit', 'local_runtime', 'parse_workers',
           'run_coroutine', 'runtime_for', 'start', 'stop', 'worker_binary_path']
