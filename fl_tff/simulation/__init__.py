"""Simulation: client selection per round and the shared training loop."""

from fl_tff.simulation.loop import TIMING_COLUMNS, run_training
from fl_tff.simulation.selection import build_training_selection_fn
