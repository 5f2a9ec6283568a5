"""Evaluation of the global model: centralized test accuracy, federated evaluation and
per-client accuracy distributions (on training clients' test examples or on held-out clients)."""

from __future__ import annotations

import collections
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.models.losses import numpy_mask
from fl_tff.models.model_fn import KerasModelFn, ModelFn, accuracy_metric

# Upper bound on logits held at once (floats): next-word models have 10,004 classes per position.
_MAX_LOGITS = 1 << 24


class GlobalKerasModel:
    """The global model as a Keras model, built once per weights evaluated: evaluators given the
    same `GlobalKerasModel` share it within one evaluation (building a Keras model takes 40 ms
    and more, a quarter of a small run's evaluation time). New weights (another object) get a
    fresh model: an eager Keras model is invalidated whenever TFF later builds models inside
    graphs (Keras' v1/v2 layer check)."""

    def __init__(self, keras_fn: Callable[[], tf.keras.Model]):
        self._keras_fn = keras_fn
        self._weights: Optional[tff.learning.models.ModelWeights] = None
        self._model: Optional[tf.keras.Model] = None

    def __call__(self, weights: tff.learning.models.ModelWeights) -> tf.keras.Model:
        """A Keras model holding `weights` (the same model while the same weights are asked)."""
        if weights is not self._weights or self._model is None:
            model = self._keras_fn()
            weights.assign_weights_to(model)
            self._model, self._weights = model, weights
        return self._model


KerasSource = Union[Callable[[], tf.keras.Model], GlobalKerasModel]
ModelForWeights = Callable[[tff.learning.models.ModelWeights], tf.keras.Model]


def _global_model(source: KerasSource) -> ModelForWeights:
    """A shared `GlobalKerasModel` as given; a plain `keras_fn` builds a fresh model per call (an
    evaluator on its own cannot know whether TFF built graphs since its last call)."""
    if isinstance(source, GlobalKerasModel):
        return source

    def fresh(weights: tff.learning.models.ModelWeights) -> tf.keras.Model:
        model = source()
        weights.assign_weights_to(model)
        return model
    return fresh


class Scorer:
    """Sums of loss and correct predictions of a Keras model over arrays, batched so the logits
    never exceed `_MAX_LOGITS` floats; labels in `masked_labels` count in neither, labels in
    `accuracy_masked_labels` not in the accuracy."""

    def __init__(self, masked_labels: Sequence[int], accuracy_masked_labels: Sequence[int]):
        self.masked = tuple(masked_labels)
        self.accuracy_masked = self.masked + tuple(accuracy_masked_labels)

    def __call__(self, model: tf.keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """[loss sum, loss count, correct, accuracy count] of `model` on `(x, y)`."""
        positions = int(np.prod(y.shape[1:], dtype=np.int64)) if y.ndim > 1 else 1
        batch = max(1, min(1024, _MAX_LOGITS // (positions * model.output_shape[-1])))
        totals = np.zeros(4)
        for i in range(0, len(x), batch):
            yb = y[i:i + batch]
            logits = model(x[i:i + batch], training=False).numpy()
            loss = tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True).numpy()
            loss_mask = numpy_mask(yb, self.masked)
            acc_mask = numpy_mask(yb, self.accuracy_masked)
            totals += [np.sum(loss * loss_mask), loss_mask.sum(),
                       np.sum((np.argmax(logits, -1) == yb) & acc_mask), acc_mask.sum()]
        return totals


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float('nan')


class CentralizedEvaluator:
    """Loss and accuracy of given model weights on centralized data (plain Keras), reported as
    `{prefix}_loss` and `{prefix}_accuracy`. `keras_fn` builds the model, or is a
    `GlobalKerasModel` that other evaluators share.
    """

    def __init__(self, keras_fn: KerasSource, x: np.ndarray, y: np.ndarray,
                 prefix: str = 'test', masked_labels: Sequence[int] = (),
                 accuracy_masked_labels: Sequence[int] = ()):
        self._model = _global_model(keras_fn)
        self._x, self._y, self._prefix = x, y, prefix
        self._score = Scorer(masked_labels, accuracy_masked_labels)

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        loss, n_loss, correct, n_acc = self._score(self._model(weights), self._x, self._y)
        return {f'{self._prefix}_loss': _ratio(loss, n_loss),
                f'{self._prefix}_accuracy': _ratio(correct, n_acc)}


class FederatedEvaluator:
    """TFF's federated evaluation (`build_fed_eval`) of given weights over every test client.

    The evaluation computation is built once per model architecture in a process (it takes the
    weights as an argument: a sweep or a study evaluates many runs of one model with it); each
    call only sets the weights and runs it.
    """

    def __init__(self, model_fn: ModelFn, test_data: tff.simulation.datasets.ClientData,
                 batch_size: int = 64):
        self._process = _fed_eval(model_fn)
        self._initial_state = None  # The process's initial state, asked of TFF once.
        self._datasets = [test_data.create_tf_dataset_for_client(c).batch(batch_size)
                          for c in test_data.client_ids]

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        if self._initial_state is None:
            self._initial_state = self._process.initialize()
        state = self._process.set_model_weights(self._initial_state, weights)
        metrics = self._process.next(state, self._datasets).metrics
        current = metrics['client_work']['eval']['current_round_metrics']
        return {'fed_eval_loss': float(current['loss']),
                'fed_eval_accuracy': accuracy_metric(current),
                'fed_eval_clients': len(self._datasets)}


_FED_EVAL: collections.OrderedDict = collections.OrderedDict()  # Key -> process, newest last.
_FED_EVAL_KEPT = 8


def _fed_eval(model_fn: ModelFn) -> tff.learning.templates.LearningProcess:
    """`build_fed_eval(model_fn)`, reused for a model with the same `computation_key`."""
    key = model_fn.computation_key if isinstance(model_fn, KerasModelFn) else None
    if key is None:
        return tff.learning.algorithms.build_fed_eval(model_fn)
    if key not in _FED_EVAL:
        _FED_EVAL[key] = tff.learning.algorithms.build_fed_eval(model_fn)
        while len(_FED_EVAL) > _FED_EVAL_KEPT:
            _FED_EVAL.popitem(last=False)
    _FED_EVAL.move_to_end(key)
    return _FED_EVAL[key]


class PerClientEvaluator:
    """Accuracy of the global model on each client of `client_data` (all its examples),
    summarized as `{prefix}_mean`, `_p10`, `_p50`, `_p90` and `_worst10pct` (the mean of the
    worst 10% of clients).

    Given the training clients' test side this measures fairness across the trained clients;
    given held-out clients (never trained on) it measures generalization to new clients.
    """

    def __init__(self, keras_fn: KerasSource,
                 client_data: tff.simulation.datasets.ClientData, prefix: str = 'client_acc',
                 masked_labels: Sequence[int] = (), accuracy_masked_labels: Sequence[int] = ()):
        self._model = _global_model(keras_fn)
        self._prefix = prefix
        self._score = Scorer(masked_labels, accuracy_masked_labels)
        self._clients = []
        for cid in client_data.client_ids:
            batch = next(iter(client_data.create_tf_dataset_for_client(cid).batch(1 << 30)))
            self._clients.append((batch['x'].numpy(), batch['y'].numpy()))

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        model = self._model(weights)
        scores = [self._score(model, x, y) for x, y in self._clients]
        return distribution(self._prefix, [correct / n for _, _, correct, n in scores if n > 0])


def distribution(prefix: str, accuracies: Sequence[float]) -> dict[str, float]:
    """`{prefix}_mean`, `_p10`, `_p50`, `_p90` and `_worst10pct` (the mean of the worst 10% of
    clients, at least one) of per-client accuracies."""
    accuracies = np.asarray(accuracies, np.float64)
    worst = np.sort(accuracies)[:max(1, int(np.ceil(0.1 * len(accuracies))))]
    p10, p50, p90 = np.percentile(accuracies, [10, 50, 90])
    return {f'{prefix}_mean': float(accuracies.mean()), f'{prefix}_p10': float(p10),
            f'{prefix}_p50': float(p50), f'{prefix}_p90': float(p90),
            f'{prefix}_worst10pct': float(worst.mean())}
