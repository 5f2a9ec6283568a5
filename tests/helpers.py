"""Small helpers shared by tests."""

import os
import subprocess
import sys

import numpy as np
import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def live_worker_pids() -> set[int]:
    """PIDs of running (non-zombie) TFF worker_binary processes; read-only, for assertions."""
    pids = set()
    for p in psutil.process_iter(['name', 'status']):
        if p.info['name'] == 'worker_binary' and p.info['status'] != psutil.STATUS_ZOMBIE:
            pids.add(p.pid)
    return pids


def run_python(args: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Runs `python ARGS` from the repo root with captured output (pipes, as CI reads them)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two structures of arrays."""
    import tensorflow as tf
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)))


def float_tensor_shapes(type_spec) -> list:
    """Shapes of the float tensors inside a TFF type (federated and nested types walked)."""
    import tensorflow_federated as tff
    found = []

    def walk(t):
        if isinstance(t, tff.FederatedType):
            walk(t.member)
        elif isinstance(t, tff.StructType):
            for _, member in tff.structure.iter_elements(t):
                walk(member)
        elif isinstance(t, tff.TensorType) and np.dtype(t.dtype).kind == 'f':
            found.append(None if t.shape is None else tuple(t.shape))
    walk(type_spec)
    return found


def run_driver_in_process(main, argv: list[str]) -> int:
    """Parses `argv` into absl's flags and calls a driver's `main` here (its exit code).

    Flags keep no state between calls (every flag is reset first). Capture output with capsys.
    """
    from absl import flags
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['driver', *argv])
    try:
        return main(['driver'])
    finally:
        flags.FLAGS.unparse_flags()
