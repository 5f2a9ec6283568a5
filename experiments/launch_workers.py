r"""Starts TFF `worker_binary` services for `--workers` and keeps them until stopped.

  python -m experiments.launch_workers --num_workers=2            # two local workers
  python -m experiments.launch_workers --num_workers=1 --port=8000  # one per host

Prints the `--workers=...` value to pass to `experiments.train`, then waits. Ctrl-C, SIGTERM
or the death of this process (even SIGKILL: parent-death signal) stops every worker it started.
Workers listen on all interfaces of the host; keep the ports behind a firewall (plain gRPC, no
authentication).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff import runtime

_NUM_WORKERS = flags.DEFINE_integer('num_workers', 2, 'Workers to start on this host (>= 1).')
_PORT = flags.DEFINE_integer('port', 0, 'Port of the first worker, the next ones follow (0: free ports).')
_LOG_DIR = flags.DEFINE_string('worker_log_dir', '', 'Directory for worker logs (default: a new '
                               'temporary directory, kept after the workers stop).')


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if _NUM_WORKERS.value < 1:
        print(f'error: --num_workers: must be >= 1, got {_NUM_WORKERS.value}', file=sys.stderr)
        return 2
    if not 0 <= _PORT.value <= 65536 - _NUM_WORKERS.value:
        print(f'error: --port: must be in [0, {65536 - _NUM_WORKERS.value}] for '
              f'{_NUM_WORKERS.value} workers, got {_PORT.value}', file=sys.stderr)
        return 2
    # Handlers first: a SIGTERM right after the address line must still stop cleanly (exit 0).
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workers = []
    # The logs outlive the workers (a temporary directory of their own unless one is given).
    log_dir = _LOG_DIR.value or tempfile.mkdtemp(prefix='fl_tff_workers_')
    try:
        for i in range(_NUM_WORKERS.value):
            if stop.is_set():
                return 0
            port = _PORT.value + i if _PORT.value else None
            log = os.path.join(log_dir, f'worker_{i}.log')
            workers.append(runtime.WorkerProcess(port=port, log_path=log).start())
        host = socket.gethostname()
        print('--workers=' + ','.join(f'{host}:{w.port}' for w in workers), flush=True)
        print(f'worker pids {" ".join(str(w.pid) for w in workers)}; logs '
              f'{" ".join(w.log_path for w in workers)}; Ctrl-C stops them', flush=True)
        while not stop.wait(1.0):
            if not all(w.running for w in workers):
                print('error: a worker exited; stopping the others', file=sys.stderr)
                return 1
        return 0
    finally:
        for worker in workers:
            worker.stop()


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
