"""Atomic writes: a failure mid-write leaves the previous file whole."""

import json
import os

import pytest

from fl_tff import files


def test_atomic_write_replaces_the_file_only_when_the_write_completes(tmp_path):
    path = str(tmp_path / 'summary.json')
    files.write_json(path, {'round': 1})
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write('{"round": 2, "trunc')
            raise RuntimeError('crash while writing')
    assert json.load(open(path)) == {'round': 1}
    assert os.listdir(tmp_path) == ['summary.json']  # No temporary file is left behind.
    files.write_json(path, {'round': 2})
    assert json.load(open(path)) == {'round': 2}


def test_partial_names_keep_the_suffix_and_are_removed_as_leftovers(tmp_path):
    partial = files.partial_path(str(tmp_path / 'final_model.keras'))
    assert partial.endswith('final_model.keras') and os.path.basename(partial).startswith(
        files.PARTIAL_PREFIX)
    open(partial, 'w').close()
    os.makedirs(files.partial_path(str(tmp_path / 'program_state_6')))
    (tmp_path / 'program_state_3').mkdir()
    assert len(files.remove_partials(str(tmp_path))) == 2
    assert os.listdir(tmp_path) == ['program_state_3']
