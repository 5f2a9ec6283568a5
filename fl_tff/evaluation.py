"""Evaluation of the global model: centralized test accuracy and federated evaluation."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.models.model_fn import ModelFn


class CentralizedEvaluator:
    """Loss and accuracy of given model weights on centralized data (plain Keras), reported as
    `{prefix}_loss` and `{prefix}_accuracy`.

    A fresh Keras model per call: an eager Keras model is invalidated whenever TFF later builds
    models inside graphs (Keras' v1/v2 layer check), and building one costs milliseconds.
    """

    def __init__(self, keras_fn: Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray,
                 batch_size: int = 1024, prefix: str = 'test'):
        self._keras_fn = keras_fn
        self._x, self._y, self._batch_size, self._prefix = x, y, batch_size, prefix

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        model = self._keras_fn()
        weights.assign_weights_to(model)
        logits = np.concatenate([
            model(self._x[i:i + self._batch_size], training=False).numpy()
            for i in range(0, len(self._x), self._batch_size)])
        loss = tf.keras.losses.sparse_categorical_crossentropy(self._y, logits, from_logits=True)
        accuracy = np.mean(np.argmax(logits, axis=-1) == self._y)
        return {f'{self._prefix}_loss': float(np.mean(loss)),
                f'{self._prefix}_accuracy': float(accuracy)}


class FederatedEvaluator:
    """TFF's federated evaluation (`build_fed_eval`) of given weights over every test client.

    The evaluation computation is built once; each call only sets the weights and runs it.
    """

    def __init__(self, model_fn: ModelFn, test_data: tff.simulation.datasets.ClientData,
                 batch_size: int = 64):
        self._process = tff.learning.algorithms.build_fed_eval(model_fn)
        self._datasets = [test_data.create_tf_dataset_for_client(c).batch(batch_size)
                          for c in test_data.client_ids]

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        state = self._process.set_model_weights(self._process.initialize(), weights)
        metrics = self._process.next(state, self._datasets).metrics
        current = metrics['client_work']['eval']['current_round_metrics']
        return {'fed_eval_loss': float(current['loss']),
                'fed_eval_accuracy': float(current['sparse_categorical_accuracy']),
                'fed_eval_clients': len(self._datasets)}


class PerClientEvaluator:
    """Accuracy of the global model on each client's held-out test examples, summarized as
    mean, 10th/50th/90th percentile and the mean of the worst 10% of clients."""

    def __init__(self, keras_fn: Callable[[], tf.keras.Model],
                 test_data: tff.simulation.datasets.ClientData):
        self._keras_fn = keras_fn
        self._clients = []
        for cid in test_data.client_ids:
            batch = next(iter(test_data.create_tf_dataset_for_client(cid).batch(1_000_000)))
            self._clients.append((batch['x'].numpy(), batch['y'].numpy()))

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        model = self._keras_fn()
        weights.assign_weights_to(model)
        accuracies = np.array([np.mean(np.argmax(model(x, training=False).numpy(), -1) == y)
                               for x, y in self._clients])
        worst = np.sort(accuracies)[:max(1, int(np.ceil(0.1 * len(accuracies))))]
        p10, p50, p90 = np.percentile(accuracies, [10, 50, 90])
        return {'client_acc_mean': float(accuracies.mean()), 'client_acc_p10': float(p10),
                'client_acc_p50': float(p50), 'client_acc_p90': float(p90),
                'client_acc_worst10pct': float(worst.mean())}
