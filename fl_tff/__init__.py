"""fl_tff: federated learning research on TensorFlow Federated. Keras model factories become
`model_fn` builders, algorithms are TFF learning processes built from declared options, and one
simulation loop runs them (`fl_tff.experiment.run_experiment` is the call behind every driver)."""
