"""Checkpoints: atomic saves, and a resume that skips checkpoints that do not load."""

import os

import numpy as np
import pytest

from fl_tff import files
from fl_tff.runs import checkpoints


def _state(value):
    return [np.full((3, 2), value, np.float32), np.int32(value)]


def _saved(tmp_path, rounds=(3, 6, 9)):
    ckpt = checkpoints.Checkpointer(str(tmp_path), every=3)
    for r in rounds:
        assert ckpt.maybe_save(_state(r), r)
    return ckpt


def _truncate_variables(directory):
    variables = os.path.join(directory, 'variables')
    (data,) = [f for f in os.listdir(variables) if f.startswith('variables.data')]
    with open(os.path.join(variables, data), 'r+b') as f:
        f.truncate(10)


def test_a_corrupted_newest_checkpoint_is_set_aside_and_the_newest_that_loads_is_used(tmp_path):
    ckpt = _saved(tmp_path)
    _truncate_variables(os.path.join(ckpt.directory, 'program_state_9'))
    fresh = checkpoints.Checkpointer(str(tmp_path), every=3)
    state, round_num = fresh.latest(_state(0))
    assert round_num == 6
    np.testing.assert_array_equal(state[0], _state(6)[0])
    (skipped,) = fresh.skipped
    assert skipped.round_num == 9 and 'Read less bytes than requested' in skipped.reason
    assert os.path.isdir(os.path.join(ckpt.directory, 'corrupt_program_state_9'))  # Kept.
    # Round 9 can be saved again after the resume redoes it.
    assert fresh.maybe_save(_state(9), 9) and fresh.latest(_state(0))[1] == 9


def test_no_loadable_checkpoint_is_one_clear_error(tmp_path):
    ckpt = _saved(tmp_path, rounds=(3,))
    _truncate_variables(os.path.join(ckpt.directory, 'program_state_3'))
    with pytest.raises(checkpoints.CheckpointLoadError, match='no checkpoint in .* loads .round 3: '):
        checkpoints.Checkpointer(str(tmp_path), every=3).latest(_state(0))
    # The next rerun does not start afresh over the run's metrics: it refuses again.
    with pytest.raises(checkpoints.CheckpointLoadError, match='set aside: corrupt_program_state_3'):
        checkpoints.Checkpointer(str(tmp_path), every=3).latest(_state(0))


def test_an_interrupted_save_leaves_no_checkpoint_and_is_cleaned_up(tmp_path, monkeypatch):
    ckpt = _saved(tmp_path, rounds=(3,))

    def crash(tmp, path):
        raise KeyboardInterrupt  # Stands in for a crash after the files, before the rename.
    monkeypatch.setattr(files, 'replace_directory', crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.maybe_save(_state(6), 6)
    monkeypatch.undo()
    assert any(n.startswith(files.PARTIAL_PREFIX) for n in os.listdir(ckpt.directory))
    fresh = checkpoints.Checkpointer(str(tmp_path), every=3)
    assert sorted(os.listdir(fresh.directory)) == ['program_state_3']
    assert fresh.latest(_state(0))[1] == 3
