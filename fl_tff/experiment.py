"""Run one experiment from an `ExperimentConfig`: the library call behind every driver."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np
import tensorflow_federated as tff

from fl_tff import (attacks, client_state, data, evaluation, files, models, options,
                    personalized_evaluation, round_hooks, rounds, runtime, simulation, weighting)
from fl_tff.runs import checkpoints
from fl_tff.runs import divergence
from fl_tff.runs import interrupts
from fl_tff.runs import reporting
from fl_tff.runtime import worker_values
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.algorithms import personalization
from fl_tff.data import client_files, tff_datasets

SIDE_SEED_KEY = 7219  # Derives the side aggregator's noise seed from the run's seed.


@dataclasses.dataclass
class ExperimentResult:
    """What a finished run leaves: its directory, per-round metrics, the final model weights and
    the process's final server state (what its last checkpoint holds)."""

    run_dir: str
    history: list[dict[str, Any]]
    final_weights: tff.learning.models.ModelWeights
    summary: dict[str, Any]
    final_state: Any = None


def load_federated_data(config: ExperimentConfig) -> data.FederatedData:
    """The partitioned dataset for `config` (cheap; raises ConfigError on an impossible partition).

    The population is `num_clients + heldout_clients` clients; a seeded choice of
    `heldout_clients` of them is kept out of training for per-client evaluation.
    """
    population = config.num_clients + config.heldout_clients
    try:
        dataset = data.load_dataset(config.dataset, seed=config.seed, num_clients=population,
                                    synthetic_alpha=config.synthetic_alpha,
                                    synthetic_beta=config.synthetic_beta, data_dir=config.data_dir)
    except tff_datasets.TooManyClientsError as e:
        raise ConfigError('num_clients', f'{e} (--num_clients plus --heldout_clients)') from e
    try:
        parts = config.option('partition').build(dataset, population, config.seed,
                                                 **config.option_params('partition'))
    except data.PartitionError as e:
        raise ConfigError('partition', str(e)) from e
    heldout = np.random.default_rng([config.seed, 7]).choice(
        population, size=config.heldout_clients, replace=False)
    return data.build_federated_data(dataset, parts, test_fraction=config.test_fraction,
                                     seed=config.seed, heldout=heldout)


def build_model_aggregator(config: ExperimentConfig, max_weight: Optional[float] = None, *,
                           side: bool = False) -> tff.aggregators.AggregationFactory:
    """The model aggregator: the chain of the layers the selected options declare (see
    `fl_tff.aggregators.chain`), each built from its own parameters and declared base settings.
    `max_weight` bounds a client's weight (`weighting.max_weight`) for the secure weighted mean.
    With `side`, the side aggregator of an algorithm's `side_uploads`: the same chain,
    unweighted (weighted as the model's unless `uniform` weights, for an algorithm whose
    `side_weighted`), without compression, its noise seeded apart from the model aggregator's."""
    selection = config.selection()
    layers = [(option.aggregator_layer,
               {**config.option_params(kind),
                **{name: getattr(config, name) for name in option.config_fields}})
              for kind, option in selection.items() if option.aggregator_layer is not None]
    context = aggregator_chain.Context(
        uniform=selection.has(options.UNIFORM_WEIGHTS), max_weight=max_weight, seed=config.seed,
        cohort=config.aggregated_clients(), client_encodes=selection.has(options.CLIENT_ENCODES))
    if side:
        weighted = selection['algorithm'].side_weighted and not context.uniform
        context = dataclasses.replace(context, uniform=not weighted, client_encodes=True,
                                      seed=data.derive_seed(config.seed, SIDE_SEED_KEY))
    return aggregator_chain.build(layers, context)


def build_process(config: ExperimentConfig, model_fn: models.ModelFn,
                  masked_labels: tuple[int, ...] = (),
                  max_weight: Optional[float] = None,
                  dataset_computation: Optional[tff.Computation] = None,
                  ) -> tff.learning.templates.LearningProcess:
    """The learning process of `config.algorithm` with its parameters, the client and server
    optimizers, the client weighting, the model aggregator and what other selected options add
    to clients (`Option.client_extras`: DP-SGD, error feedback). It takes client rounds
    (`fl_tff.data.client_rounds`); with `dataset_computation` it is composed with it as
    `--simulation` says, and takes client tasks (`fl_tff.simulation.worker_data`)."""
    selection = config.selection()
    extras: dict[str, Any] = {}
    for _, option in selection.items():
        if option.client_extras is not None:
            extras.update(option.client_extras(config, masked_labels))
    process = selection['algorithm'].build(
        model_fn,
        client_optimizer=selection['client_optimizer'].build(
            config.client_learning_rate, **config.option_params('client_optimizer')),
        server_optimizer=selection['server_optimizer'].build(
            config.server_learning_rate, **config.option_params('server_optimizer'),
            **{name: getattr(config, name)
               for name in selection['server_optimizer'].config_fields}),
        weighting=selection['client_weighting'].build(padding_labels=masked_labels),
        model_aggregator=build_model_aggregator(config, max_weight),
        **({'side_aggregator': build_model_aggregator(config, max_weight, side=True)}
           if selection['algorithm'].side_uploads else {}),
        **extras, **config.option_params('algorithm'),
        **{name: getattr(config, name) for name in selection['algorithm'].config_fields})
    if dataset_computation is None:
        return process
    return selection['simulation'].build(process, dataset_computation)


def build_model(config: ExperimentConfig, fed_data: data.FederatedData):
    """(model_fn, keras_fn) for the config's model on the dataset; ConfigError if they don't fit."""
    return models.model_fn_for_dataset(
        config.model, fed_data.element_spec, fed_data.num_classes, seed=config.seed,
        masked_labels=fed_data.masked_labels, accuracy_masked_labels=fed_data.accuracy_masked_labels,
        **({'hidden_units': config.hidden_units} if config.hidden_units else {}))


def check_model(config: ExperimentConfig, model_fn: models.ModelFn) -> None:
    """The selected options' checks against the model (`Option.check_model`), run before any
    run directory exists.

    Raises:
      ConfigError: A setting the model does not allow (e.g. more personal layers than it has).
    """
    for _, option in config.selection().items():
        if option.check_model is not None:
            try:
                option.check_model(config, model_fn)
            except options.OptionError as e:
                raise ConfigError(e.flag, str(e)) from e


def build_clock(config: ExperimentConfig, fed_data: data.FederatedData,
                model_fn: models.ModelFn) -> simulation.devices.TaskClock:
    """The simulated clock: the training clients' device profiles (drawn, or read from
    `--device_profiles`) and the byte ledger's task sizes.

    Raises:
      ConfigError: A profile file without a row for one of the clients.
    """
    try:
        profiles = simulation.devices.draw_profiles(
            config.device_settings(), list(fed_data.train.client_ids), config.seed)
    except simulation.devices.DeviceProfileError as e:
        raise ConfigError('device_profiles', str(e)) from e
    download, upload = round_hooks.task_bytes(config, model_fn)
    return simulation.devices.TaskClock(profiles, fed_data.train_sizes, download_bytes=download,
                                        upload_bytes=upload)


def build_attack(config: ExperimentConfig,
                 fed_data: data.FederatedData) -> Optional[attacks.Attack]:
    """What the run's malicious clients do (`--attack`; None for `none`).

    Raises:
      ConfigError: A setting the attack refuses for this dataset.
    """
    try:
        return config.option('attack').build(num_classes=fed_data.num_classes,
                                             **config.option_params('attack'))
    except options.OptionError as e:
        raise ConfigError(e.flag, str(e)) from e


def build_selector(config: ExperimentConfig, fed_data: data.FederatedData,
                   model_fn: models.ModelFn, epochs: int,
                   attack: Optional[attacks.Attack] = None):
    """The run's client selection on the simulated clock: rounds (`ClientSelector`), or, for an
    asynchronous algorithm, server updates (`AsyncSelector`); with `attack`, a seeded share of
    the clients is malicious."""
    selection = config.selection()
    clock = build_clock(config, fed_data, model_fn)
    rounds = simulation.build_training_selection_fn(
        fed_data.train, clients_per_round=config.clients_per_round, epochs=epochs,
        batch_size=config.client_batch_size, seed=config.seed,
        heterogeneity=config.heterogeneity(), client_sizes=fed_data.train_sizes,
        sampling=config.client_sampling,
        steps_per_epoch=selection.has(options.STEPS_PER_EPOCH), clock=clock,
        round_deadline=config.round_deadline, attack=attack)
    if not selection.has(options.ASYNCHRONOUS):
        return rounds
    return simulation.AsyncSelector(rounds, clock,
                                    concurrency=config.option_params('algorithm')['concurrency'],
                                    buffer_size=config.aggregated_clients(),
                                    dropout_rate=config.dropout_rate, seed=config.seed)


# Re-exported: the error `run_experiment` raises when training diverges.
DivergenceError = divergence.DivergenceError


class RunInterrupted(Exception):
    """Training was interrupted (Ctrl-C); the newest checkpoint is kept.

    Attributes:
      last_round: The last round whose metrics were recorded.
      resume_round: The round a rerun of the same command starts with.
    """

    def __init__(self, last_round: int, checkpoint_round: int):
        self.last_round, self.resume_round = last_round, checkpoint_round + 1
        super().__init__(f'interrupted after round {last_round}; rerun the same command to resume '
                         f'from round {self.resume_round}')


def preflight(config: ExperimentConfig) -> None:
    """Checks, before any data is loaded, what validation cannot see in the config alone: that
    the output directory can be created, TFF's distributed-DP factory accepts the settings
    (building it sets a process-wide protobuf option), a `--download` can reach its server and
    the `--workers` accept connections; then the options' `prepare` steps run (`--download`
    fetches the dataset's files).

    Raises:
      ConfigError: Naming `output_dir`, `client_files_dir` or `workers`.
    """
    _check_output_dir(config.output_dir)
    if config.client_files_dir:
        _check_writable('client_files_dir', config.client_files_dir)
    for _, option in config.selection().items():
        if option.preflight is not None:
            try:
                option.preflight(config)
            except options.OptionError as e:
                raise ConfigError(e.flag, str(e)) from e
    if config.workers:
        try:
            runtime.check_workers_reachable(runtime.parse_workers(config.workers))
        except runtime.WorkerUnreachableError as e:
            raise ConfigError('workers', str(e)) from e
    for _, option in config.selection().items():
        if option.prepare is not None:  # Every check passed: now the work it needs first.
            try:
                option.prepare(config)
            except options.OptionError as e:
                raise ConfigError(e.flag, str(e)) from e


def _check_output_dir(path: str) -> None:
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError('output_dir', f'cannot create {path!r}: {existing!r} is not a directory')
    _check_writable('output_dir', existing, path)


def _check_writable(flag: str, directory: str, path: Optional[str] = None) -> None:
    """A probe: permissions, read-only and special file systems (e.g. /proc) all show here."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f'{files.PARTIAL_PREFIX}probe-', dir=directory))
    except OSError as e:
        raise ConfigError(flag, f'cannot create {path or directory!r}: {e.strerror} in '
                          f'{directory!r}; choose a writable directory') from e


def _evaluators(config: ExperimentConfig, fed_data: data.FederatedData,
                model_fn: models.ModelFn, keras_fn, global_model: evaluation.GlobalKerasModel,
                global_train: evaluation.CentralizedEvaluator, process,
                client_states: Mapping[str, client_state.ClientStateStore],
                attack: Optional[attacks.Attack],
                ) -> list[Callable[[tff.learning.models.ModelWeights], dict[str, float]]]:
    masks = dict(masked_labels=fed_data.masked_labels,
                 accuracy_masked_labels=fed_data.accuracy_masked_labels)
    evaluators = [
        evaluation.CentralizedEvaluator(global_model, fed_data.test_x, fed_data.test_y, **masks),
        global_train,
        evaluation.FederatedEvaluator(model_fn, fed_data.test),
        evaluation.PerClientEvaluator(global_model, fed_data.test, **masks),
    ]
    if fed_data.heldout is not None:
        evaluators.append(evaluation.PerClientEvaluator(global_model, fed_data.heldout,
                                                        prefix='heldout_acc', **masks))
    personalized = personalized_evaluation.PersonalizedEvaluator(
        keras_fn, model_fn, fed_data.train, fed_data.test, process=process,
        client_states=client_states.get(personalization.PERSONAL_SLOT),
        finetune_epochs=config.finetune_epochs,
        batch_size=config.client_batch_size, learning_rate=config.client_learning_rate,
        seed=config.seed, heldout_train=fed_data.heldout_train,
        heldout_test=fed_data.heldout_test, **masks)
    if personalized.active:
        evaluators.append(personalized)
    if attack is not None and attack.trigger is not None:
        evaluators.append(attacks.BackdoorEvaluator(global_model, fed_data.test_x, fed_data.test_y,
                                                    attack))
    return evaluators


def run_experiment(config: ExperimentConfig, log: Callable[[str], None] = print,
                   on_round: Optional[Callable[[dict[str, Any]], None]] = None
                   ) -> ExperimentResult:
    """Validates `config`, trains (resuming or extending its run directory if one with the same
    settings exists), evaluates every `eval_every` rounds, and writes the run directory.

    The run directory (`output_dir/run_name`) receives config.json, flags.txt, partition.json,
    metrics.csv (one row per round), tensorboard/, checkpoints/ (every `checkpoint_every`
    rounds and the last), final_model.keras and summary.json, each file written atomically. It is
    locked while the run uses it. A checkpoint that does not load is set aside and the newest one
    that loads is resumed. `on_round(row)` is called with each round's metrics once they are
    written (e.g. to advance a notebook's progress bar).

    Raises:
      ConfigError: A bad setting, an unwritable output directory or unreachable workers.
      run_lock.RunDirInUseError: Another live run holds the run directory.
      checkpoints.CheckpointLoadError: The run has checkpoints and none of them loads.
      DivergenceError: Training diverged (see `fl_tff.runs.divergence` for the rule); the last good
        checkpoint is kept.
      RunInterrupted: Ctrl-C during training; the newest checkpoint is kept.
    """
    config.validate()
    preflight(config)
    fed_data = load_federated_data(config)
    model_fn, keras_fn = build_model(config, fed_data)
    epochs = config.local_epochs()
    check_model(config, model_fn)
    attack = build_attack(config, fed_data)
    select = build_selector(config, fed_data, model_fn, epochs, attack)
    privacy_ledger = round_hooks.build_privacy_ledger(config, select, fed_data.train_sizes,
                                                      models.trainable_size(model_fn))
    round_hooks.check_budget(privacy_ledger, select)
    run = reporting.open_run_dir(config.output_dir, config.run_name(), config,
                                 wait_for_lock=config.wait_for_lock, log=log)
    progress = _Progress()
    try:
        with interrupts.never_dropped():
            return _train(config, run, fed_data, model_fn, keras_fn, select, privacy_ledger,
                          epochs, log, progress, attack, on_round)
    except KeyboardInterrupt:  # Anywhere in the run: say what is on disk.
        raise progress.interrupted(run.path) from None
    finally:
        run.lock.release()


@dataclasses.dataclass
class _Progress:
    """How far `_train` got, for the message of an interrupted run."""

    done: int = 0           # The round the run resumed after (0 for a new run).
    released: bool = False  # Whether this session has written a round's metrics.

    def interrupted(self, run_dir: str) -> RunInterrupted:
        # A release rewrites metrics.csv up to its round (SIGINT waits for the write), so after
        # one the file is the truth; before one it may still hold rows past the resumed round.
        rows = reporting.read_metrics(run_dir) if self.released else []
        last = max((r['round'] for r in rows), default=self.done)
        return RunInterrupted(last, max(checkpoints.saved_rounds(run_dir), default=0))


def _train(config: ExperimentConfig, run: reporting.RunDir, fed_data: data.FederatedData,
           model_fn: models.ModelFn, keras_fn, select: simulation.ClientSelector,
           privacy_ledger, epochs: int, log: Callable[[str], None],
           progress: '_Progress', attack: Optional[attacks.Attack],
           round_callback: Optional[Callable[[dict[str, Any]], None]]) -> ExperimentResult:
    """The part of `run_experiment` that runs inside the locked run directory."""
    run_dir = run.path
    log(f'new run directory {run_dir}: {run.note}' if run.note else f'run directory: {run_dir}')
    if not run.resuming:
        reporting.write_json(os.path.join(run_dir, reporting.PARTITION_FILE), fed_data.summary)
    log(data.partition.format_summary(fed_data.summary, max_rows=5))

    start = time.monotonic()
    masks = dict(masked_labels=fed_data.masked_labels,
                 accuracy_masked_labels=fed_data.accuracy_masked_labels)
    # The global model's loss on all training data (what FedProx's paper plots).
    # One Keras model per evaluated round, shared by the evaluators of the global model.
    global_model = evaluation.GlobalKerasModel(keras_fn)
    global_train = evaluation.CentralizedEvaluator(global_model, fed_data.train_x, fed_data.train_y,
                                                   prefix='global_train', **masks)
    with runtime.runtime_for(runtime.parse_workers(config.workers), subrounds=config.subrounds,
                             log_path=os.path.join(run_dir, 'worker.log')) as rt, \
            contextlib.ExitStack() as cleanup:
        # Written once per session; each worker reads its clients' files (the driver sends ids).
        data_dir = cleanup.enter_context(tempfile.TemporaryDirectory(
            prefix='fl_tff_client_data_', dir=config.client_files_dir or None))
        train_files = client_files.write_client_files(fed_data.train,
                                                      os.path.join(data_dir, 'train'))
        process = build_process(config, model_fn, fed_data.masked_labels,
                                max_weight=weighting.max_weight(
                                    config.option('client_weighting').build(
                                        padding_labels=fed_data.masked_labels),
                                    max(fed_data.train_sizes.values()), epochs,
                                    labels_per_example=int(np.prod(
                                        fed_data.element_spec['y'].shape))),
                                dataset_computation=select.dataset_computation(train_files))
        if isinstance(process, worker_values.ReadsValuesFromFiles):
            # Each worker reads its clients' states (or SecAgg masks) beside their data, and
            # writes the new states there for the driver.
            process = process.reading_values_from(os.path.join(data_dir, 'client_values'))
        needs = rounds.as_rounds(process).needs
        client_states = {slot: cleanup.enter_context(contextlib.closing(
            client_state.ClientStateStore(initial)))
            for slot, initial in needs.client_states.items()}
        versions = (simulation.VersionStore(process.get_model_weights(process.initialize()))
                    if needs.start_weights else None)  # Start weights of clients in flight.
        checkpointer = checkpoints.Checkpointer(run_dir, config.checkpoint_every,
                                                client_states=checkpoints.stores_of(
                                                    {**client_states, **({
                                                        'start_weights': versions}
                                                        if versions is not None else {})}))
        initial_state = process.initialize()
        state, done = checkpointer.latest(initial_state) if run.resuming else (None, 0)
        for skipped in checkpointer.skipped:
            log(f'skipped the checkpoint of round {skipped.round_num}, which does not load '
                f'({skipped.reason}); it is kept as {skipped.moved_to}')
        if state is None:
            state = initial_state
            checkpointer.maybe_save(state, 0, force=True)
        else:
            log(f'resuming after round {done} from {checkpointer.directory}')
        progress.done = done
        monitor = divergence.DivergenceMonitor(
            global_train(process.get_model_weights(initial_state))['global_train_loss']
            if config.divergence_factor else float('nan'), config.divergence_factor)
        previous = reporting.read_metrics(run_dir, up_to_round=done)
        ledgers = round_hooks.Ledgers(
            select, config.rounds,
            round_hooks.build_communication_ledger(config, process.get_model_weights(state),
                                               process),
            privacy_ledger)
        ledgers.replay(done)
        evaluators = _evaluators(config, fed_data, model_fn, keras_fn, global_model, global_train,
                                 process, client_states, attack)
        releaser = reporting.MetricsReleaser(run_dir)
        reporter = reporting.RoundReporter(config.rounds, done + 1, log)

        def on_round(row, new_state):
            progress.released = True
            releaser.release(row)
            reporter.round(row)
            monitor.check(row)
            checkpointer.maybe_save(new_state, row['round'], force=row['round'] == config.rounds)
            if round_callback is not None:
                round_callback(row)
            interrupts.raise_if_dropped()  # The round is on disk: stop here if Ctrl-C was lost.

        try:
            state, history = simulation.run_training(
                process, select, rounds=config.rounds, eval_every=config.eval_every,
                evaluation_fn=lambda w: {k: v for e in evaluators for k, v in e(w).items()},
                on_round=on_round, initial_state=state, start_round=done + 1,
                before_round=ledgers.before_round, client_states=client_states,
                versions=versions, measure_next=_bytes_to_workers(rt) if config.workers else None)
        except DivergenceError as e:
            raise DivergenceError(f'{e}; the last good checkpoint (round '
                                  f'{checkpointer.latest_round()}) is kept in {checkpointer.directory}',
                                  e.round_num, run_dir) from e
        finally:
            reporter.close()

        final_weights = process.get_model_weights(state)
        if ledgers.stopped and history and history[-1]['round'] != checkpointer.latest_round():
            checkpointer.maybe_save(state, history[-1]['round'], force=True)
    history = previous + history
    model = keras_fn()
    final_weights.assign_weights_to(model)
    _save_model(model, os.path.join(run_dir, reporting.FINAL_MODEL_FILE))
    evaluated = [row for row in history if 'test_accuracy' in row]
    summary = {
        'run_dir': run_dir,
        'rounds': history[-1]['round'] if history else 0,
        'final_test_accuracy': evaluated[-1]['test_accuracy'],
        'final_fed_eval_accuracy': evaluated[-1]['fed_eval_accuracy'],
        'best_test_accuracy': max(r['test_accuracy'] for r in evaluated),
        'final_global_train_loss': evaluated[-1]['global_train_loss'],
        'seconds_this_session': time.monotonic() - start,
    }
    summary['final_per_client_accuracy'] = {  # Global, personal and fine-tuned, side by side.
        k: v for k, v in evaluated[-1].items()
        if k.startswith(('client_acc_', 'personal_acc_', 'finetuned_acc_', 'heldout_'))}
    summary.update(ledgers.summary(history))
    summary['simulated_clock'] = simulation.clock_summary(select, history)
    if attack is not None:
        summary['attack'] = {
            'attack': attack.name, 'malicious_clients': sorted(select.malicious),
            'malicious_fraction': len(select.malicious) / select.population,
            'malicious_updates': sum(r.get('malicious', 0) for r in history),
            **{k: v for k, v in evaluated[-1].items() if k.startswith('backdoor_')}}
    if ledgers.stopped:
        log(ledgers.stopped[0])
    if 'privacy' in summary:
        log(f"privacy: {summary['privacy']['statement']}")
    reporting.write_json(os.path.join(run_dir, reporting.SUMMARY_FILE), summary)
    log(f"final test accuracy {summary['final_test_accuracy']:.4f} after {summary['rounds']} rounds "
        f"({summary['seconds_this_session']:.0f}s); metrics in "
        f"{os.path.join(run_dir, reporting.METRICS_FILE)}")
    return ExperimentResult(run_dir, history, final_weights, summary, final_state=state)


def _bytes_to_workers(rt: runtime.RemoteRuntime) -> Callable[[], Callable[[], dict[str, int]]]:
    """A `measure_next` for `run_training`: the bytes this process sent to the workers during
    the round's `next` (computation, model state, client tasks), in total and the most to one."""
    def start():
        before = rt.bytes_sent()

        def end():
            sent = [b - a for a, b in zip(before, rt.bytes_sent())]
            return {'worker_bytes_sent': sum(sent), 'worker_bytes_sent_max': max(sent)}
        return end
    return start


def _save_model(model, path: str) -> None:
    """`model.save(path)` through a temporary file of the same suffix, fsynced and renamed."""
    tmp = files.partial_path(path)
    try:
        model.save(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    files.fsync_directory(os.path.dirname(os.path.abspath(path)))
