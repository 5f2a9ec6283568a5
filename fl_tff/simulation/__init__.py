"""Simulation: client selection per round, device heterogeneity, client data built in the
workers and the shared training loop."""

from fl_tff.simulation.heterogeneity import DeviceHeterogeneity, RoundPlan, plan_round
from fl_tff.simulation.loop import LAST_ROUND, TIMING_COLUMNS, StopTraining, run_training
from fl_tff.simulation.selection import (BufferedSelection, ClientSelector, PlannedSelection,
                                         as_selection, build_training_selection_fn)
from fl_tff.simulation.worker_data import SIMULATIONS, compose
from fl_tff.simulation import devices
from fl_tff.simulation.async_schedule import AsyncPlan, AsyncSelector, VersionStore
from fl_tff.simulation.clock_summary import clock_summary
