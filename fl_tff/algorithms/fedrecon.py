"""Federated Reconstruction (Singhal et al. 2021, "Federated Reconstruction: Partially Local
Federated Learning"), through TFF's `tff.learning.algorithms.build_fed_recon` and
`build_fed_recon_eval`.

The last `--personal_layers` layers are local. Unlike FedPer's head, they are not client state:
each round a client starts them from their initial values (the model's seeded initializers),
reconstructs them on half of its round's batches with the global layers frozen, then trains
the global layers on the other half with the local ones frozen, and sends the global layers'
delta. Nothing personal is stored between rounds, so it serves clients seen once (and new
clients) the same way; at evaluation each client reconstructs on its training split and is
scored on its test split (`personal_acc_*`).

Its client data are datasets of batches, as TFF's builder takes them: the worker builds the
client's round as for every algorithm and hands over its steps' batches
(`fl_tff.data.client_rounds.to_batches`). Clients are weighted as TFF's builder does: uniformly
or by the examples of post-reconstruction training.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import fedper, personalization
from fl_tff.models.model_fn import KerasModelFn, ModelFn, accuracy_metric



def reconstruction_model_fn(model_fn: KerasModelFn, local_layers: int):
    """A no-arg builder of `tff.learning.models.ReconstructionModel`s from `model_fn`'s Keras
    factory, whose last `local_layers` layers with trainable variables are local."""
    def build() -> tff.learning.models.ReconstructionModel:
        keras_model = model_fn.keras_fn()
        layers = [layer for layer in keras_model.layers if layer.trainable_weights]
        cut = len(layers) - local_layers
        return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
            keras_model, global_layers=layers[:cut], local_layers=layers[cut:],
            input_spec=model_fn.input_spec)
    return build


class FedReconProcess(tff.learning.templates.LearningProcess):
    """TFF's FedRecon process whose model weights are the whole model's: the global layers from
    the state, the local layers at their initial values (what a client reconstructs from).

    Implements `round_hooks.SendsPartOfModel`, `personalized_evaluation.Reconstructs` and
    `worker_data.ComposableNext`.
    """

    def __init__(self, inner: tff.learning.templates.LearningProcess, next_fn: tff.Computation,
                 *, shared: Sequence[bool], initial_weights: tff.learning.models.ModelWeights,
                 evaluation: Callable[[], tff.learning.templates.LearningProcess]):
        self._inner, self._shared, self._initial = inner, tuple(shared), initial_weights
        self._evaluation = evaluation
        state_type = inner.initialize.type_signature.result.member
        weights_type = tff.types.tensorflow_to_type(tff.learning.models.ModelWeights(
            [tf.TensorSpec(np.shape(t), np.asarray(t).dtype) for t in initial_weights.trainable],
            [tf.TensorSpec(np.shape(t), np.asarray(t).dtype)
             for t in initial_weights.non_trainable]))
        local = [np.asarray(t) for t, s in zip(initial_weights.trainable, shared) if not s]
        positions = [i for i, s in enumerate(shared) if s]

        @tff.tensorflow.computation(state_type)
        def get_model_weights(state):
            global_trainable = list(state.global_model_weights.trainable)
            local_values = iter(local)
            trainable = [global_trainable.pop(0) if s else tf.constant(next(local_values))
                         for s in shared]
            return tff.learning.models.ModelWeights(
                trainable, list(state.global_model_weights.non_trainable))

        @tff.tensorflow.computation(state_type, weights_type)
        def set_model_weights(state, weights):
            trainable = list(weights.trainable)
            return state._replace(global_model_weights=tff.learning.models.ModelWeights(
                [trainable[i] for i in positions], list(weights.non_trainable)))

        super().__init__(inner.initialize, next_fn, get_model_weights, set_model_weights,
                         get_hparams_fn=inner.get_hparams, set_hparams_fn=inner.set_hparams)

    @property
    def next_computation(self) -> tff.Computation:
        return self.next

    def with_next(self, next_fn: tff.Computation) -> 'FedReconProcess':
        """The same process with `next_fn` behind `next` (e.g. composed with a dataset
        computation)."""
        return FedReconProcess(self._inner, next_fn, shared=self._shared,
                               initial_weights=self._initial, evaluation=self._evaluation)

    @staticmethod
    def evaluation_batches(train: tf.data.Dataset, test: tf.data.Dataset,
                           batch_size: int) -> tf.data.Dataset:
        """A client's data for `reconstructed_accuracies` (see the module function)."""
        return evaluation_batches(train, test, batch_size)

    @property
    def uplink_positions(self) -> list[int]:
        """The global layers' positions: what a client update carries."""
        return [i for i, s in enumerate(self._shared) if s]

    def reconstructed_accuracies(self, weights: tff.learning.models.ModelWeights,
                                 clients: Sequence[tf.data.Dataset]) -> list[float]:
        """Each client's accuracy on its test split after reconstructing its local layers on
        its training split (TFF's `build_fed_recon_eval`, one call per client), from the global
        layers of `weights`.

        Args:
          weights: The whole model's weights (`get_model_weights`).
          clients: Each client's `evaluation_batches` (it reconstructs on its training split
            for one epoch and is scored on its test split).
        """
        global_weights = tff.learning.models.ModelWeights(
            [np.asarray(weights.trainable[i]) for i in self.uplink_positions],
            [np.asarray(t) for t in weights.non_trainable])
        evaluation = self._evaluation()
        state = evaluation.set_model_weights(evaluation.initialize(), global_weights)
        return [accuracy_metric(evaluation.next(state, [batches]).metrics[
            'client_work']['eval']['current_round_metrics']) for batches in clients]


def evaluation_batches(train: tf.data.Dataset, test: tf.data.Dataset,
                       batch_size: int) -> tf.data.Dataset:
    """An evaluated client's data for `FedReconProcess.reconstructed_accuracies`: a header,
    then its training-split batches (reconstructed on), then its test-split batches (scored).
    The header is a batch of zeros whose size is the number of training-split batches
    (`build_fed_recon_eval` takes one dataset per client and a split function of the dataset
    alone; TFF's models take exactly (x, y), so the split cannot be a field)."""
    train, test = train.batch(batch_size), test.batch(batch_size)
    count = int(train.reduce(0, lambda n, _: n + 1))
    spec = train.element_spec
    header = tf.nest.map_structure(lambda s: tf.zeros([count, *s.shape[1:]], s.dtype), spec)
    return tf.data.Dataset.from_tensors(header).concatenate(train).concatenate(test)


def _split_after_header(dataset: tf.data.Dataset) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(training-split batches, test-split batches) of `evaluation_batches`."""
    count = dataset.take(1).reduce(
        tf.constant(0, tf.int64), lambda _, b: tf.cast(tf.shape(tf.nest.flatten(b)[0])[0],
                                                        tf.int64))
    return dataset.skip(1).take(count), dataset.skip(1 + count)


def build_fedrecon(
        model_fn: ModelFn,
        *,
        personal_layers: int,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
) -> FedReconProcess:
    """Builds FedRecon (see the module docstring) with TFF's builder.

    Args:
      model_fn: A `KerasModelFn` (its Keras model becomes the reconstruction model).
      personal_layers: How many of the model's last layers are local (reconstructed).
      client_optimizer: Trains the global layers, and reconstructs the local ones (default SGD
        at 0.1).
      server_optimizer: On the aggregated global delta (default SGD at 1.0).
      weighting: Uniform or examples processed (TFF's NUM_EXAMPLES: post-reconstruction
        examples).
      model_aggregator: Aggregates the global deltas (default: TFF's mean).

    Returns:
      A `FedReconProcess`.

    Raises:
      ValueError: `model_fn` is not a `KerasModelFn`, a weighting TFF's builder does not
        compute, or `personal_layers` out of range for the model.
    """
    if not isinstance(model_fn, KerasModelFn):
        raise ValueError('FedRecon rebuilds the Keras model: model_fn must be a '
                         f'fl_tff.models.KerasModelFn, got {type(model_fn).__name__}')
    personal = personalization.personal_mask(model_fn, personal_layers)
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    split = tff.learning.models.ReconstructionModel.build_dataset_split_fn(split_dataset=True)

    def train_metrics():  # Examples counted as our processes report them (post-reconstruction).
        return [*model_fn.metrics(), tff.learning.metrics.NumExamplesCounter()]

    inner = tff.learning.algorithms.build_fed_recon(
        reconstruction_model_fn(model_fn, personal_layers), loss_fn=model_fn.loss,
        metrics_fn=train_metrics, server_optimizer_fn=server_optimizer,
        client_optimizer_fn=client_optimizer, reconstruction_optimizer_fn=client_optimizer,
        dataset_split_fn=split,
        client_weighting=weighting_lib.to_tff_weighting(weighting, 'FedRecon'),
        model_aggregator_factory=model_aggregator)

    @functools.cache  # Traced when first evaluated (shared by the process's `with_next` copies).
    def evaluation():
        return tff.learning.algorithms.build_fed_recon_eval(
            reconstruction_model_fn(model_fn, personal_layers), loss_fn=model_fn.loss,
            metrics_fn=model_fn.metrics, reconstruction_optimizer_fn=client_optimizer,
            dataset_split_fn=_split_after_header)

    @tff.tensorflow.computation
    def initial_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    return FedReconProcess(inner, inner.next, shared=[not p for p in personal],
                           initial_weights=initial_weights_fn(), evaluation=evaluation)


OPTION = options.Option(
    'fedrecon', 'Federated Reconstruction (Singhal et al. 2021, TFF\'s build_fed_recon): the last '
    '--personal_layers layers are reconstructed by each client every round from their initial '
    'values, never stored or sent; only the other layers are aggregated',
    params=(fedper.PERSONAL_LAYERS,), build=build_fedrecon,
    provides={options.LOCAL_EPOCHS, options.PERSONAL_MODEL},
    requires={options.TFF_WEIGHTING: 'weighs clients as TFF\'s build_fed_recon does'},
    defaults={'client_weighting': options.Default(
        'examples_processed', 'TFF\'s build_fed_recon weighs clients by examples processed')},
    check_model=fedper.check_personal_layers)
