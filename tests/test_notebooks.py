"""The notebooks under docs/notebooks run top to bottom in a fresh kernel, and are stored
without outputs."""

import glob
import os
import re

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


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_runs_top_to_bottom(tff_runtime, path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    before = live_worker_pids()
    monkeypatch.setenv('TMPDIR', str(tmp_path / 'tmp'))  # The kernel's temporary files.
    (tmp_path / 'tmp').mkdir()
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                                     resources={'metadata': {'path': str(tmp_path)}})
    client.execute()  # Raises CellExecutionError naming the failing cell.
    outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    assert live_worker_pids() <= before  # The kernel's TFF worker is gone.
    assert list((tmp_path / 'tmp').iterdir()) == []  # Its run directories too.
    text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
    assert not re.search(r'^(I\d{4} |INFO:)', text, re.MULTILINE), text[:2000]  # No INFO logs.
    if os.path.basename(path) == 'quickstart.ipynb':
        _check_quickstart_figures(text, tmp_path)


def _check_quickstart_figures(text, tmp_path):
    """The FedAvg accuracy it prints is the command-line run's with the same settings, and its
    DP statement's epsilon is dp_accounting's for that run (Poisson q = 10/20, z = 0.5, 8
    rounds, delta = 1e-3)."""
    import dp_accounting
    from fl_tff import experiment
    from fl_tff.config import ExperimentConfig
    printed = float(re.search(r'FedAvg final test accuracy: ([0-9.]+)', text)[1])
    config = ExperimentConfig(dataset='digits', model='2nn', num_clients=20, clients_per_round=10,
                              partition='dirichlet', alpha=0.5, client_epochs=2, rounds=8,
                              eval_every=1, seed=0, output_dir=str(tmp_path / 'cli'))
    assert printed == experiment.run_experiment(config, log=lambda _: None).summary[
        'final_test_accuracy']
    epsilon = float(re.search(r'DP-FedAvg: user-level \(0.5 noise multiplier\): \(([0-9.]+), '
                              r'0.001\)-DP', text)[1])
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(0.5)), 8)
    expected = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-3)
    assert epsilon == pytest.approx(expected, rel=1e-3)  # Printed to 4 significant digits.
