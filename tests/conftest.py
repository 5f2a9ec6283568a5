"""Shared fixtures: one fl_tff runtime (one TFF worker) for the whole test session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def tff_runtime():
    """The process-wide fl_tff runtime, started once and stopped at the end of the session."""
    from fl_tff import runtime
    rt = runtime.start()
    yield rt
    runtime.stop()


@pytest.fixture(scope='session')
def digits():
    from fl_tff import data
    return data.load_digits()


@pytest.fixture(scope='session')
def skewed_digits(digits):
    """Digits over 6 clients with log-normal sizes, so example weighting matters."""
    from fl_tff import data
    parts = data.make_partition('quantity', digits.y, 6, seed=3, sigma=1.0)
    return data.build_federated_data(digits, parts, seed=3)


def pytest_sessionfinish(session, exitstatus):
    """Drops TFF's stock context before interpreter shutdown (its __del__ fails there)."""
    import sys
    if 'fl_tff.runtime' in sys.modules:
        sys.modules['fl_tff.runtime'].drop_stock_context()
