"""A run and its directory: the one-line-per-round report and the run directory's files
(`reporting`), checkpoints (`checkpoints`), the directory's lock (`run_lock`), and what stops a
run (Ctrl-C, `interrupts`; divergence, `divergence`)."""
