"""`model_fn` builders: no-arg callables returning `tff.learning.models.VariableModel`."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.models import keras_models, losses

ModelFn = Callable[[], tff.learning.models.VariableModel]


def keras_model_factory(name: str, input_shape, num_classes: int, seed: int = 0,
                        **model_kwargs: Any) -> Callable[[], tf.keras.Model]:
    """A no-arg callable building the registered Keras model `name` (fresh each call)."""
    factory = keras_models.MODELS.get(name).build
    return lambda: factory(input_shape, num_classes, seed=seed, **model_kwargs)


def batched_input_spec(element_spec) -> Any:
    """The input spec of batches of `element_spec` (leading batch dimension of unknown size)."""
    return tf.nest.map_structure(
        lambda s: tf.TensorSpec([None, *s.shape], s.dtype), element_spec)


class KerasModelFn:
    """A `model_fn` wrapping a Keras factory for TFF, with sparse cross-entropy on logits and
    accuracy metrics. It keeps what it is built from (`keras_fn`, `input_spec`, `loss`,
    `metrics`), so builders that need the Keras model itself (FedRecon's reconstruction model)
    can rebuild it.

    With `masked_labels` (sequence padding) the loss and the accuracy (TFF's
    `MaskedCategoricalAccuracy`, reported as `accuracy`) leave those labels out; the accuracy
    also leaves out `accuracy_masked_labels`.
    """

    def __init__(self, keras_fn: Callable[[], tf.keras.Model], input_spec,
                 masked_labels: Sequence[int] = (), accuracy_masked_labels: Sequence[int] = (),
                 architecture: Optional[tuple] = None):
        self.keras_fn, self.input_spec = keras_fn, input_spec
        self._masked = tuple(masked_labels)
        self._accuracy_masked = self._masked + tuple(accuracy_masked_labels)
        self._architecture = architecture

    @property
    def computation_key(self) -> Optional[tuple]:
        """What a TFF computation over this model's variables depends on (architecture, input
        spec, loss and metrics; not the seed of its initial weights), or None when unknown
        (a Keras factory of the caller's own): computations that take the weights as an
        argument, like federated evaluation, can be built once per key."""
        if self._architecture is None:
            return None
        return (self._architecture, repr(self.input_spec), self._masked, self._accuracy_masked)

    def loss(self) -> tf.keras.losses.Loss:
        """A new loss object."""
        if self._masked:
            return losses.MaskedSparseCategoricalCrossentropy(self._masked)
        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[tf.keras.metrics.Metric]:
        """New metric objects."""
        if self._masked:
            return [tff.simulation.baselines.keras_metrics.MaskedCategoricalAccuracy(
                masked_tokens=list(self._accuracy_masked))]
        return [tf.keras.metrics.SparseCategoricalAccuracy()]

    def __call__(self) -> tff.learning.models.VariableModel:
        return tff.learning.models.from_keras_model(
            self.keras_fn(), input_spec=self.input_spec, loss=self.loss(), metrics=self.metrics())


def build_model_fn(keras_fn: Callable[[], tf.keras.Model], input_spec,
                   masked_labels: Sequence[int] = (),
                   accuracy_masked_labels: Sequence[int] = (),
                   architecture: Optional[tuple] = None) -> KerasModelFn:
    """Wraps a Keras factory for TFF (see `KerasModelFn`).

    `input_spec` is the spec of a *batched* client dataset element (see `batched_input_spec`);
    `architecture` identifies what `keras_fn` builds, seed aside (see
    `KerasModelFn.computation_key`).
    """
    return KerasModelFn(keras_fn, input_spec, masked_labels, accuracy_masked_labels,
                        architecture)


def model_fn_for_dataset(model_name: str, element_spec, num_classes: int, seed: int = 0,
                         masked_labels: Sequence[int] = (),
                         accuracy_masked_labels: Sequence[int] = (),
                         **model_kwargs: Any) -> tuple[ModelFn, Callable[[], tf.keras.Model]]:
    """The `model_fn` and Keras factory for a registered model on a dataset's element spec.

    Returns both so callers can evaluate centrally with the same architecture.
    """
    keras_fn = keras_model_factory(model_name, element_spec['x'].shape, num_classes, seed,
                                   **model_kwargs)
    architecture = (model_name, tuple(element_spec['x'].shape), num_classes,
                    tuple(sorted(model_kwargs.items())))
    return build_model_fn(keras_fn, batched_input_spec(element_spec), masked_labels,
                          accuracy_masked_labels, architecture), keras_fn


def accuracy_metric(metrics) -> float:
    """The accuracy in a model's TFF metrics (`sparse_categorical_accuracy`, or `accuracy` for the
    masked metric of sequence models)."""
    return float(next(v for k, v in metrics.items() if k.endswith('accuracy')))


@dataclasses.dataclass(frozen=True)
class ModelTypes:
    """What builders need to know of a model before tracing anything with it: its weights' TFF
    type, its batches' spec, its metrics' finalizers and its trainable variables' names and
    specs (read from a model built in a throwaway graph)."""

    weights_type: Any
    input_spec: Any
    metric_finalizers: Any
    trainable_names: tuple[str, ...]
    trainable_specs: tuple[tf.TensorSpec, ...]

    def metrics_aggregation_fn(self):
        """TFF's sum-then-finalize aggregation of the model's metrics over clients."""
        return tff.learning.metrics.sum_then_finalize(self.metric_finalizers)

    @property
    def trainable_size(self) -> int:
        """Number of trainable values."""
        return int(sum(s.shape.num_elements() for s in self.trainable_specs))


# Building a Keras model takes 60-100 ms (more for the LSTMs) and one process build asked for
# the same types up to six times: they are kept per architecture (`computation_key`, which
# leaves out the seed of the initial weights) or, for a model_fn of the caller's own, per
# model_fn object for as long as it lives.
_TYPES_BY_KEY: dict[tuple, ModelTypes] = {}
_TYPES_BY_FN: 'weakref.WeakKeyDictionary[Any, ModelTypes]' = weakref.WeakKeyDictionary()


def model_types(model_fn: ModelFn) -> ModelTypes:
    """The `ModelTypes` of the model `model_fn` builds (built once per architecture)."""
    key = model_fn.computation_key if isinstance(model_fn, KerasModelFn) else None
    cached = _TYPES_BY_KEY.get(key) if key is not None else _TYPES_BY_FN.get(model_fn)
    if cached is not None:
        return cached
    with tf.Graph().as_default():
        model = model_fn()
        types = ModelTypes(
            weights_type=tff.learning.models.weights_type_from_model(model),
            input_spec=model.input_spec,
            metric_finalizers=model.metric_finalizers(),
            trainable_names=tuple(v.name for v in model.trainable_variables),
            trainable_specs=tuple(tf.TensorSpec(v.shape, v.dtype)
                                  for v in model.trainable_variables))
    if key is not None:
        _TYPES_BY_KEY[key] = types
    else:
        try:
            _TYPES_BY_FN[model_fn] = types
        except TypeError:  # Not weakly referenceable: not kept.
            pass
    return types


def trainable_size(model_fn: ModelFn) -> int:
    """Number of trainable values of the model `model_fn` builds (in a throwaway graph, so no
    eager Keras state is created)."""
    return model_types(model_fn).trainable_size
