"""Small helpers shared by tests."""

import os
import subprocess
import sys
import weakref

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


def client_rounds(select, round_num: int) -> list:
    """The rounds (`fl_tff.data.client_rounds`) of `select`'s clients in `round_num`, built here:
    the data a process that is not composed with the dataset computation takes."""
    return [select.client_round(task) for task in select(round_num)]


def to_batches(client_round):
    """A client's round as a dataset of its steps' batches (what TFF's own builders take)."""
    import collections
    import tensorflow as tf
    from fl_tff.data import client_rounds as rounds_lib
    element = next(iter(client_round))
    fields = rounds_lib.model_inputs(element)
    batches, start = [], 0
    for size in element[rounds_lib.STEP_SIZES_KEY].numpy():
        batches.append(collections.OrderedDict((k, v[start:start + size]) for k, v in fields.items()))
        start += size
    if not batches:
        return tf.data.Dataset.from_tensors(fields).take(0)
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    return dataset


def plan_rounds(select, plan) -> list:
    """The rounds of `plan`'s participants (see `client_rounds`)."""
    return [select.client_round(task) for task in select.client_inputs(plan)]


def raise_in_a_weakref_callback(exc_type) -> None:
    """Raises `exc_type` inside a weakref callback, which Python cannot propagate: it hands it to
    `sys.unraisablehook` (what CI hit with a Ctrl-C during garbage collection)."""
    class Collected:
        pass
    obj = Collected()
    def callback(_):
        raise exc_type
    ref = weakref.ref(obj, callback)  # pylint: disable=unused-variable
    del obj  # The callback runs now.
