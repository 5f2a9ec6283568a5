"""Run one experiment from an `ExperimentConfig`: the library call behind every driver."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import tensorflow_federated as tff

from fl_tff import aggregation, algorithms, data, evaluation, models, reporting, runtime, simulation
from fl_tff.config import ConfigError, ExperimentConfig

_WEIGHTING = {'examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
              'uniform': tff.learning.ClientWeighting.UNIFORM}


@dataclasses.dataclass
class ExperimentResult:
    """What a finished run leaves: its directory, per-round metrics and final model weights."""

    run_dir: str
    history: list[dict[str, Any]]
    final_weights: tff.learning.models.ModelWeights
    summary: dict[str, Any]


def load_federated_data(config: ExperimentConfig) -> data.FederatedData:
    """The partitioned dataset for `config` (cheap; raises ConfigError on an impossible partition)."""
    dataset = data.load_dataset(config.dataset, seed=config.seed, num_clients=config.num_clients,
                                synthetic_alpha=config.synthetic_alpha,
                                synthetic_beta=config.synthetic_beta)
    partition = config.resolved_partition()
    if partition == 'natural':
        parts = dataset.natural_partition
    else:
        try:
            parts = data.make_partition(partition, dataset.y, config.num_clients, config.seed,
                                        alpha=config.alpha, classes_per_client=config.classes_per_client,
                                        sigma=config.lognormal_sigma)
        except data.PartitionError as e:
            raise ConfigError('partition', str(e)) from e
    return data.build_federated_data(dataset, parts, test_fraction=config.test_fraction,
                                     seed=config.seed)


def build_process(config: ExperimentConfig, model_fn: models.ModelFn
                  ) -> tff.learning.templates.LearningProcess:
    """The learning process for `config.algorithm` with its optimizers, weighting and aggregator."""
    spec = algorithms.get_algorithm(config.algorithm)
    weighting = _WEIGHTING[config.client_weighting]
    return spec.build(
        model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(config.client_learning_rate),
        server_optimizer=algorithms.build_optimizer(
            config.server_optimizer, config.server_learning_rate, momentum=config.server_momentum,
            beta1=config.server_beta1, beta2=config.server_beta2, epsilon=config.server_epsilon),
        weighting=weighting,
        model_aggregator=aggregation.build_model_aggregator(
            config.aggregator, uniform=weighting == tff.learning.ClientWeighting.UNIFORM,
            clip_norm=config.clip_norm, zeroing_norm=config.zeroing_norm,
            trim_fraction=config.trim_fraction),
        **{name: getattr(config, name) for name in spec.params})


def build_model(config: ExperimentConfig, fed_data: data.FederatedData):
    """(model_fn, keras_fn) for the config's model on the dataset; ConfigError if they don't fit."""
    input_shape = fed_data.element_spec['x'].shape
    if config.model == 'cnn' and input_shape.rank != 3:
        raise ConfigError('model', f'cnn needs image inputs (height, width, channels); '
                          f'{config.dataset} has shape {tuple(input_shape)}: use logreg or 2nn')
    return models.model_fn_for_dataset(
        config.model, fed_data.element_spec, fed_data.num_classes, seed=config.seed,
        **({'hidden_units': config.hidden_units} if config.model == '2nn' else {}))


def run_experiment(config: ExperimentConfig,
                   log: Callable[[str], None] = print) -> ExperimentResult:
    """Validates `config`, trains, evaluates every `eval_every` rounds, and writes the run dir.

    The run directory (`output_dir/run_name`, suffixed if it exists) receives config.json,
    flags.txt, partition.json, metrics.csv (one row per round) and summary.json.
    """
    config.validate()
    fed_data = load_federated_data(config)
    model_fn, keras_fn = build_model(config, fed_data)
    epochs = config.client_epochs if algorithms.get_algorithm(config.algorithm).local_epochs else 1
    select = simulation.build_training_selection_fn(
        fed_data.train, clients_per_round=config.clients_per_round, epochs=epochs,
        batch_size=config.client_batch_size, seed=config.seed,
        heterogeneity=config.heterogeneity(), client_sizes=fed_data.train_sizes)
    run_dir = reporting.create_run_dir(config.output_dir, config.run_name())
    reporting.save_config(run_dir, config)
    reporting.write_json(os.path.join(run_dir, reporting.PARTITION_FILE), fed_data.summary)
    log(f'run directory: {run_dir}')
    log(data.partition.format_summary(fed_data.summary, max_rows=5))
    writer = reporting.MetricsWriter(run_dir)

    def on_round(row):
        writer.write(row)
        log(reporting.format_round_line(row, config.rounds))

    start = time.monotonic()
    with runtime.local_runtime(log_path=os.path.join(run_dir, 'worker.log')):
        process = build_process(config, model_fn)
        evaluators = [
            evaluation.CentralizedEvaluator(keras_fn, fed_data.test_x, fed_data.test_y),
            # The global model's loss on all training data (what FedProx's paper plots).
            evaluation.CentralizedEvaluator(keras_fn, fed_data.train_x, fed_data.train_y,
                                            prefix='global_train'),
            evaluation.FederatedEvaluator(model_fn, fed_data.test),
        ]
        state, history = simulation.run_training(
            process, select, rounds=config.rounds, eval_every=config.eval_every,
            evaluation_fn=lambda w: {k: v for e in evaluators for k, v in e(w).items()},
            on_round=on_round)
        final_weights = process.get_model_weights(state)
    evaluated = [row for row in history if 'test_accuracy' in row]
    summary = {
        'run_dir': run_dir,
        'rounds': config.rounds,
        'final_test_accuracy': evaluated[-1]['test_accuracy'],
        'final_fed_eval_accuracy': evaluated[-1]['fed_eval_accuracy'],
        'best_test_accuracy': max(r['test_accuracy'] for r in evaluated),
        'final_global_train_loss': evaluated[-1]['global_train_loss'],
        'total_seconds': time.monotonic() - start,
    }
    reporting.write_json(os.path.join(run_dir, reporting.SUMMARY_FILE), summary)
    log(f"final test accuracy {summary['final_test_accuracy']:.4f} after {config.rounds} rounds "
        f"({summary['total_seconds']:.0f}s); metrics in {os.path.join(run_dir, reporting.METRICS_FILE)}")
    return ExperimentResult(run_dir, history, final_weights, summary)
