"""One run per run directory: a live holder is named, a dead holder's lock is taken over."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from fl_tff.runs import run_lock

_HOLD = textwrap.dedent('''
    import sys, time
    from fl_tff.runs import run_lock
    run_lock.acquire(sys.argv[1])
    print('locked', flush=True)
    time.sleep(600)
''')


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def test_a_second_run_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(run_lock.RunDirInUseError, match=f'in use by PID {holder.pid}') as e:
            run_lock.acquire(str(tmp_path))
        assert e.value.holder == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead holder's lock: the next run takes it over.
    with run_lock.acquire(str(tmp_path)) as lock:
        assert lock.held and run_lock.holder_pid(str(tmp_path)) == os.getpid()
    assert not lock.held


def test_wait_for_lock_waits_until_the_holder_is_gone(tmp_path):
    holder = _holder(tmp_path)
    lines = []
    # The holder dies once we report waiting: acquire() must then succeed, not fail.
    def log(line):
        lines.append(line)
        threading.Thread(target=lambda: (holder.send_signal(signal.SIGKILL), holder.wait())).start()
    lock = run_lock.acquire(str(tmp_path), wait=True, log=log, poll_seconds=0.05)
    assert lines == [f'waiting for PID {holder.pid} to release {tmp_path}']
    assert lock.held
    lock.release()
