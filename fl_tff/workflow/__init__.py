"""Tools around runs: sweeps over settings and seeds (`sweep`), which options combine
(`compatibility`), and plots of metrics and finished runs (`plotting`, `run_plots`)."""
