"""Simulation: client selection per round, device heterogeneity and the shared training loop."""

from fl_tff.simulation.fast import SIMULATIONS, FastProcess
from fl_tff.simulation.heterogeneity import DeviceHeterogeneity, RoundPlan, plan_round
from fl_tff.simulation.loop import LAST_ROUND, TIMING_COLUMNS, StopTraining, run_training
from fl_tff.simulation.selection import ClientSelector, WholeClientData, build_training_selection_fn
