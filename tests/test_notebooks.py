"""The notebooks under docs/notebooks run top to bottom in a fresh kernel, and are stored
without outputs."""

import glob
import os

import nbclient
import nbformat
import pytest

from tests.helpers import REPO_ROOT, live_worker_pids

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, 'docs', 'notebooks', '*.ipynb')))


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == 'code':
                assert cell.outputs == [] and cell.execution_count is None, (
                    f'{os.path.basename(path)} is stored with outputs; clear them')


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_runs_top_to_bottom(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    before = live_worker_pids()
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                                     resources={'metadata': {'path': str(tmp_path)}})
    client.execute()  # Raises CellExecutionError naming the failing cell.
    outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    assert live_worker_pids() <= before  # The kernel's TFF worker is gone.
