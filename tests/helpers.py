"""Small helpers shared by tests."""

import os
import subprocess
import sys
import time
import weakref

import numpy as np
import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def live_worker_pids() -> set[int]:
    """PIDs of running (non-zombie) TFF worker_binary processes started by this test process or
    its subprocesses (they inherit its `FL_TFF_TEST_SESSION`, see conftest.py), so another
    pytest-xdist process's workers do not count; read-only, for assertions."""
    session = os.environ.get('FL_TFF_TEST_SESSION')
    pids = set()
    for p in psutil.process_iter(['name', 'status']):
        if p.info['name'] != 'worker_binary' or p.info['status'] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if session is None or p.environ().get('FL_TFF_TEST_SESSION') == session:
                pids.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
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


def run_driver_refusal(main, argv: list[str]) -> int:
    """`run_driver_in_process` for input the driver must refuse before any work (exit 2): not an
    integration helper, so such tests stay in the fast tier; should the driver not refuse, the
    tier guard of conftest.py fails the test when it reaches TFF's worker."""
    return run_driver_in_process(main, argv)


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


class Figures:
    """What every matplotlib figure saved while it is installed showed: per figure, its pixel
    size and one `Panel` per axes (what the test asserts on, rather than a file's size)."""

    def __init__(self, monkeypatch):
        from matplotlib.figure import Figure
        self.saved: list[dict] = []
        original = Figure.savefig

        def savefig(figure, *args, **kwargs):
            renderer = figure.canvas.get_renderer()
            box = figure.bbox
            titles = [t for t in [*figure.texts, *(ax.title for ax in figure.axes)] if t.get_text()]
            self.saved.append({
                'suptitle': figure.get_suptitle(),
                'panels': [Panel.of(ax) for ax in figure.axes if ax.get_label() != '<colorbar>'],
                # Every title drawn within the figure's edges (none cut off).
                'titles_inside': all(box.x0 <= e.x0 and e.x1 <= box.x1 for e in
                                     (t.get_window_extent(renderer) for t in titles))})
            return original(figure, *args, **kwargs)
        monkeypatch.setattr(Figure, 'savefig', savefig)

    def only(self) -> dict:
        (figure,) = self.saved
        return figure


class Panel:
    """One axes of a saved figure: labels, scales, legend entries and each labelled line's
    points (lines without a label, like a box's median bar, are kept under their index)."""

    def __init__(self, title, xlabel, ylabel, xscale, yscale, legend, lines, texts, images):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xscale, self.yscale, self.legend = xscale, yscale, legend
        self.lines, self.texts, self.images = lines, texts, images

    @classmethod
    def of(cls, ax) -> 'Panel':
        lines = {}
        for i, line in enumerate(ax.get_lines()):
            label = line.get_label()
            key = label if label and not label.startswith('_') else i
            lines[key] = (list(np.asarray(line.get_xdata(), dtype=float)),
                          list(np.asarray(line.get_ydata(), dtype=float)))
        legend = ax.get_legend()
        return cls(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(),
                   ax.get_yscale(), [t.get_text() for t in legend.get_texts()] if legend else [],
                   lines, [t.get_text() for t in ax.texts],
                   [np.asarray(im.get_array()) for im in ax.get_images()])


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels, read back from the PNG file's header."""
    import struct
    with open(path, 'rb') as f:
        header = f.read(24)
    assert header[:8] == b'\x89PNG\r\n\x1a\n' and header[12:16] == b'IHDR', f'{path} is not a PNG'
    return struct.unpack('>II', header[16:24])


def valid_choices(registry) -> str:
    """The valid-choices list an error about an unknown choice of `registry` prints (taken from
    the registry, so adding an option edits no test)."""
    return ', '.join(sorted(registry.names))


class PlainSgd:
    """A Keras model of `keras_fn` with one compiled plain-SGD step on it (loss, gradient by
    autodiff, w <- w - lr g): the papers' local updates written plainly, in TF. Build one per
    round of a plain algorithm and reuse it for its clients (`load` their start weights): the
    step is traced once. (Not across tests: a model TFF's builders make in a graph invalidates
    Keras models made before it.)"""

    def __init__(self, keras_fn, lr: float):
        import tensorflow as tf
        self.model = keras_fn()
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        variables = self.model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, self.model(x, training=True))
            for v, g in zip(variables, tape.gradient(loss, variables)):
                v.assign_sub(lr * g)

        self.step = step

    def load(self, weights) -> 'PlainSgd':
        for v, w in zip(self.model.trainable_variables, weights):
            v.assign(w)
        return self

    def weights(self) -> list:
        return [v.numpy() for v in self.model.trainable_variables]


def seed_secagg_randomness(monkeypatch, seed: int) -> None:
    """Makes the SecAgg protocol's secrets (X25519 keys, self-mask seeds, nonces) come from a
    seeded generator instead of the OS, so a statistical test of its masks gives the same
    samples every run. Only tests call this: the protocol itself always uses OS randomness."""
    import types

    import numpy as np
    from cryptography.hazmat.primitives.asymmetric import x25519

    from fl_tff.secagg import protocol
    rng = np.random.default_rng(seed)

    class SeededPrivateKey:
        @staticmethod
        def generate():
            return x25519.X25519PrivateKey.from_private_bytes(rng.bytes(32))

        from_private_bytes = staticmethod(x25519.X25519PrivateKey.from_private_bytes)

    monkeypatch.setattr(protocol, 'x25519', types.SimpleNamespace(
        X25519PrivateKey=SeededPrivateKey, X25519PublicKey=x25519.X25519PublicKey))
    monkeypatch.setattr(protocol, 'secrets', types.SimpleNamespace(
        token_bytes=lambda n: rng.bytes(n), SystemRandom=protocol.secrets.SystemRandom))


def numpy_top_k(value, fraction):
    """`value` with all but its ceil(fraction n) largest magnitudes zeroed (at least one)."""
    flat = value.ravel()
    keep = np.argsort(-np.abs(flat), kind='stable')[:max(1, int(np.ceil(fraction * flat.size)))]
    sent = np.zeros_like(flat)
    sent[keep] = flat[keep]
    return sent.reshape(value.shape)


_EXAMPLE_GRADIENTS = {}  # id(model) -> its one-example gradient, traced once.


def clipped_mean_gradients(model, inputs, labels, clip):
    """DP-SGD's gradient without noise, written plainly: each example's cross-entropy gradient,
    one example at a time, scaled to global L2 norm <= `clip`, summed and divided by the batch
    size."""
    import tensorflow as tf
    if id(model) not in _EXAMPLE_GRADIENTS:
        @tf.function(reduce_retracing=True)
        def example_gradient(x, y):
            with tf.GradientTape() as tape:
                loss = tf.keras.losses.sparse_categorical_crossentropy(
                    y, model(x, training=True), from_logits=True)[0]
            return tape.gradient(loss, model.trainable_variables)
        _EXAMPLE_GRADIENTS[id(model)] = (model, example_gradient)  # Keeps the model alive.
    example_gradient = _EXAMPLE_GRADIENTS[id(model)][1]
    total = [tf.zeros_like(v) for v in model.trainable_variables]
    for i in range(len(labels)):
        grads = example_gradient(inputs[i:i + 1], labels[i:i + 1])
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
        scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
        total = [t + scale * g for t, g in zip(total, grads)]
    return [t / len(labels) for t in total]


def run_with_client_states(process, select, rounds, stored=None):
    """(state, client states by id) after `rounds` rounds of a one-slot
    `StatefulLearningProcess` over `select`'s plans, the states kept as the simulation keeps
    them (`stored`, updated in place when given)."""
    state, stored = process.initialize(), ({} if stored is None else stored)
    for r in range(1, rounds + 1):
        plan = select.plan(r)
        ids = list(plan.participants)
        out = process.next(state, plan_rounds(select, plan), client_ids=ids, round_num=r,
                           client_states=[stored.get(i, process.initial_client_state())
                                          for i in ids])
        state = out.state
        stored.update(zip(ids, out.client_states))
    return state, stored


def run_with_client_state_slots(process, select, rounds: int):
    """(state, stored states) after `rounds` rounds of a process with client-state slots (one or
    several), each participant given its stored state in every slot (the slot's initial state
    before it first trains) as the simulation does; stored states by (slot, client id)."""
    from fl_tff import rounds as rounds_lib
    state, stored = process.initialize(), {}
    for r in range(1, rounds + 1):
        plan = select.plan(r)
        ids = [c for c, _ in plan.participants]
        inputs = rounds_lib.RoundInputs(r, plan, ids, {
            slot: [stored.get((slot, i), initial) for i in ids]
            for slot, initial in process.needs.client_states.items()})
        out = process.run_round(state, plan_rounds(select, plan), inputs)
        state = out.state
        for slot, states in out.client_states.items():
            stored.update({(slot, i): s for i, s in zip(ids, states)})
    return state, stored
