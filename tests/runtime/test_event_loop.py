"""Our checkpoints and metric releases must not break TFF's own training loop, which needs the
thread's current event loop (`asyncio.run` would leave none)."""

import asyncio

from fl_tff.runs import checkpoints


def test_checkpointing_leaves_the_current_event_loop_usable(tmp_path):
    # The thread's current loop (another test in this process may have left none); it stays
    # the current loop after the test, as a thread's default loop would.
    current = asyncio.new_event_loop()
    asyncio.set_event_loop(current)
    checkpointer = checkpoints.Checkpointer(str(tmp_path), every=1)
    checkpointer.maybe_save({'w': [1.0, 2.0]}, 1)
    assert checkpointer.latest_round() == 1
    # asyncio.run would have set it to None ("There is no current event loop") and closed it.
    assert asyncio.get_event_loop() is current and not current.is_closed()


def test_ctrl_c_during_a_checkpoint_or_metrics_write_is_delivered_after_the_write(tmp_path):
    """A KeyboardInterrupt inside the event loop would abandon the executor thread's write."""
    import asyncio
    import os
    import signal

    import pytest

    from fl_tff import runtime
    path = tmp_path / 'metrics.csv'

    async def write():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the write is under way.
        await asyncio.get_running_loop().run_in_executor(None, path.write_text, 'round\n1\n')

    with pytest.raises(KeyboardInterrupt):
        runtime.run_coroutine(write)
    assert path.read_text() == 'round\n1\n'


def test_ctrl_c_before_the_write_starts_still_writes_and_prints_no_unawaited_coroutine(
        tmp_path, recwarn):
    """CI's Ctrl-C test once caught the signal between the making of a checkpoint's save
    coroutine and its run: the save was skipped and Python printed "coroutine ... was never
    awaited" under the one-line message. The coroutine is now made inside the deferred section."""
    import gc
    import os
    import signal

    import pytest

    from fl_tff import runtime
    path = tmp_path / 'state'

    async def write(text):
        await asyncio.get_running_loop().run_in_executor(None, path.write_text, text)

    def save(text):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives as the coroutine is made.
        return write(text)

    with pytest.raises(KeyboardInterrupt):
        runtime.run_coroutine(save, 'round 6')
    gc.collect()
    assert path.read_text() == 'round 6'
    assert not [w for w in recwarn if 'never awaited' in str(w.message)]



def test_writes_from_inside_a_running_loop_run_in_the_calling_thread_as_in_a_jupyter_cell(tmp_path):
    """A notebook cell runs inside the kernel's event loop. Our synchronous writes run there in
    the same thread (not on a helper thread, which once hung a notebook in CI), and give the
    kernel its loop back."""
    import threading

    from fl_tff import runtime
    checkpointer = checkpoints.Checkpointer(str(tmp_path), every=1)

    async def where():
        return threading.current_thread()

    async def cell():
        outer = asyncio.get_running_loop()
        assert runtime.run_coroutine(where) is threading.current_thread()
        checkpointer.maybe_save({'w': [1.0, 2.0]}, 1)
        assert checkpointer.latest_round() == 1
        assert asyncio.get_running_loop() is outer  # The kernel's loop is back.
        await asyncio.sleep(0)  # And still runs.
        return 'done'

    assert asyncio.run(cell()) == 'done'


def test_writes_reuse_their_executor_threads_across_calls():
    """A new loop per call would write every checkpoint from a new thread; a Jupyter kernel opens
    a socket per thread that prints and keeps polling them (it ran out of file descriptors after
    about a thousand writes)."""
    import threading

    from fl_tff import runtime

    async def writer_thread():
        return await asyncio.get_running_loop().run_in_executor(None, threading.get_ident)

    threads = {runtime.run_coroutine(writer_thread) for _ in range(30)}
    assert len(threads) == 1  # One writer thread, reused by every call.
