"""Simulation: client selection per round, device heterogeneity, client data built in the
workers and the shared training loop."""

from fl_tff.rounds import BufferedSelection, PlannedSelection, RoundPlan
from fl_tff.simulation.heterogeneity import DeviceHeterogeneity, plan_round
from fl_tff.simulation.loop import LAST_ROUND, TIMING_COLUMNS, StopTraining, run_training
from fl_tff.simulation.selection import ClientSelector, as_selection, build_training_selection_fn
from fl_tff.simulation.worker_data import SIMULATIONS, compose
from fl_tff.simulation import devices
from fl_tff.simulation.async_schedule import AsyncPlan, AsyncSelector, VersionStore
from fl_tff.simulation.clock_summary import clock_summary
