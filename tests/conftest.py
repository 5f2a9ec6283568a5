"""Shared fixtures, and the two test tiers.

Tiers by construction: a test is marked `integration` when it requests a fixture that gives it
TFF's runtime (`tff_runtime`, directly or through another fixture) or when its code, or a helper
function of its module that it calls, names one of `INTEGRATION_NAMES` (running a driver or a
subprocess, an experiment, a study, a notebook, a worker of its own). No list of tests is kept
by hand. `make test-fast` runs `-m "not integration"`; `make test` runs everything.

The classification is checked while tests run, in both tiers: a test not marked `integration`
that starts a TFF worker or traces a federated computation fails at once with the fixture to
request (`tff_runtime`, or `federated_tracing` for a test that only traces), so a misclassified
test cannot slow the fast tier down unnoticed.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import types
import uuid

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One TensorFlow thread per op and per graph in the test processes (and the drivers, workers and
# kernels they start): `make test` runs a process per core, whose tiny ops only lose time to
# thread hand-offs across them (measured: 9% of tests/algorithms' wall time at -n 2).
os.environ.setdefault('TF_NUM_INTRAOP_THREADS', '1')
os.environ.setdefault('TF_NUM_INTEROP_THREADS', '1')
# Marks the TFF workers this test process (and the subprocesses and kernels it starts) owns, so
# assertions about leaked workers ignore another pytest-xdist process's workers.
os.environ['FL_TFF_TEST_SESSION'] = f'{os.getpid()}-{uuid.uuid4().hex[:8]}'

import pytest  # noqa: E402

INTEGRATION = 'integration'
# Fixtures that give a test TFF's runtime (one worker per test process, shared), or declare that
# it traces federated computations without running them.
INTEGRATION_FIXTURES = frozenset({'tff_runtime', 'federated_tracing'})
# Names whose use makes a test an integration test: each starts a TFF worker, a Python
# subprocess, a notebook kernel or a whole experiment.
INTEGRATION_NAMES = frozenset({
    'run_python', 'run_driver_in_process', 'subprocess', 'run_experiment', 'run_study',
    'run_grid', 'NotebookClient', 'local_runtime', 'runtime_for', 'WorkerProcess',
    'LocalRuntime', 'RemoteRuntime', 'launch_local_workers',
})


def _code_names(code: types.CodeType) -> set[str]:
    names, stack = set(), [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def names_used(fn, _seen: set | None = None) -> set[str]:
    """The global and attribute names `fn`'s code uses, and those of the functions of its own
    module that it names (followed transitively)."""
    fn = inspect.unwrap(fn)
    code = getattr(fn, '__code__', None)
    if code is None:
        return set()
    seen = _seen if _seen is not None else set()
    seen.add(fn)
    names = _code_names(code)
    module_globals = getattr(fn, '__globals__', {})
    for name in list(names):
        helper = module_globals.get(name)
        if (inspect.isfunction(helper) and helper not in seen
                and helper.__module__ == fn.__module__):
            names |= names_used(helper, seen)
    return names


def integration_reason(item) -> str | None:
    """Why `item` is an integration test (a fixture or a name it uses), or None."""
    fixtures = INTEGRATION_FIXTURES.intersection(getattr(item, 'fixturenames', ()))
    if fixtures:
        return f'fixture {sorted(fixtures)[0]}'
    functions = [getattr(item, 'function', None)]
    # Fixture functions count as the test's own code (a fixture may run the experiment).
    info = getattr(item, '_fixtureinfo', None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        functions.extend(d.func for d in defs)
    for fn in functions:
        if fn is None:
            continue
        used = INTEGRATION_NAMES.intersection(names_used(fn))
        if used:
            return f'{fn.__name__} uses {sorted(used)[0]}'
    return None


# Names of what costs most (a Python process, a kernel, a driver or whole experiments): tests
# that use them run first, so that `make test`'s processes end on short tests rather than one
# of them waiting for the other's last long one.
LONGEST_FIRST = (frozenset({'run_python', 'subprocess', 'NotebookClient', 'run_driver_in_process',
                            'launch_local_workers', 'WorkerProcess'}),
                 frozenset({'run_experiment', 'run_study', 'run_grid'}))


def _cost_rank(item, reason: str | None) -> int:
    """0 for a test that starts processes, 1 for one that runs experiments, 2 for any other
    integration test, 3 for a fast-tier test."""
    if reason is None:
        return 3
    used = set()
    for fn in [getattr(item, 'function', None)] + [
            d.func for defs in (item._fixtureinfo.name2fixturedefs.values()
                                if getattr(item, '_fixtureinfo', None) else ()) for d in defs]:
        if fn is not None:
            used |= names_used(fn)
    return next((rank for rank, names in enumerate(LONGEST_FIRST) if names & used), 2)


def pytest_collection_modifyitems(config, items):
    ranks = {}
    for item in items:
        reason = integration_reason(item)
        if reason is not None:
            item.add_marker(pytest.mark.integration)
            item.user_properties.append(('integration', reason))
        ranks[item.nodeid] = _cost_rank(item, reason)
    items.sort(key=lambda item: ranks[item.nodeid])  # Stable: files keep their order.


class MisclassifiedTestError(AssertionError):
    """A test not marked `integration` did what only integration tests may do."""


class _Guard:
    """While a fast-tier test runs, starting a TFF worker or tracing a federated computation
    raises `MisclassifiedTestError`."""

    active = False
    installed = False

    @classmethod
    def refuse(cls, what: str) -> None:
        if cls.active:
            raise MisclassifiedTestError(
                f'this test {what} but is not an integration test: request the `tff_runtime` '
                'fixture (`federated_tracing` if it runs nothing) so it is marked `integration`')

    @classmethod
    def install(cls) -> None:
        """Wraps the worker's start and TFF's context stack (a public type's method)."""
        if cls.installed:
            return
        cls.installed = True
        import tensorflow_federated as tff
        from fl_tff import runtime

        start = runtime.WorkerProcess.start

        def guarded_start(self, *args, **kwargs):
            cls.refuse('starts a TFF worker')
            return start(self, *args, **kwargs)
        runtime.WorkerProcess.start = guarded_start

        stack_type = type(tff.framework.get_context_stack())
        install = stack_type.install

        def guarded_install(self, ctx):
            if type(ctx).__name__ == 'FederatedComputationContext':
                cls.refuse('traces a federated computation')
            return install(self, ctx)
        stack_type.install = guarded_install


@contextlib.contextmanager
def _guarded(item):
    if item.get_closest_marker(INTEGRATION) is not None:
        yield
        return
    _Guard.install()
    _Guard.active = True
    try:
        yield
    finally:
        _Guard.active = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _guarded(item):
        return (yield)


@pytest.fixture(scope='session')
def tff_runtime():
    """The process-wide fl_tff runtime, started once per test process and stopped at the end.
    Requesting it marks a test `integration`."""
    from fl_tff import runtime
    rt = runtime.start()
    yield rt
    runtime.stop()


@pytest.fixture
def federated_tracing():
    """Requested by a test that traces federated computations but runs none (no worker):
    tracing takes seconds, so it marks the test `integration`."""


@pytest.fixture(scope='session')
def digits():
    from fl_tff import data
    return data.load_digits()


@pytest.fixture(scope='session')
def skewed_digits(digits):
    """600 of the digits over 6 clients with log-normal sizes, so example weighting matters
    (a third of the digits: the tests that use it compare against oracles, so they need few
    steps, and every step is run twice, once by fl_tff and once by the oracle)."""
    import dataclasses
    from fl_tff import data
    from fl_tff.data import partition
    subset = dataclasses.replace(digits, x=digits.x[:600], y=digits.y[:600])
    parts = partition.quantity_skew(subset.y, 6, seed=3, sigma=1.0)
    return data.build_federated_data(subset, parts, seed=3)


def pytest_sessionfinish(session, exitstatus):
    """Drops TFF's stock context before interpreter shutdown (its __del__ fails there)."""
    if 'fl_tff.runtime' in sys.modules:
        sys.modules['fl_tff.runtime'].drop_stock_context()
