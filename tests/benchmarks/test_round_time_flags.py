"""`benchmarks.round_time` refuses flags this machine cannot honour: one line, exit 2, before
any worker starts."""

import os

from tests.helpers import run_python


def test_pinned_workers_on_one_core_are_refused_naming_the_way_out():
    one_core = min(os.sched_getaffinity(0))
    result = run_python(['-m', 'benchmarks.round_time', '--workers'],
                        preexec_fn=lambda: os.sched_setaffinity(0, {one_core}))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and '--pin_workers' in errors[0] and '--nopin_workers' in errors[0]
    assert f'[{one_core}]' in errors[0]
