"""Differential privacy: user-level DP aggregation (`aggregators`), sample-level DP-SGD on
clients (`dpsgd`), accounting (`accounting`), the per-round ledger (`ledger`) and the calculator.

Submodules are imported where used, so the calculator runs without loading TensorFlow.
"""
