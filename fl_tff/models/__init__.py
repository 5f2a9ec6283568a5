"""Keras model factories and `model_fn` builders for TFF."""

from fl_tff.models.keras_models import MODELS, logistic_regression, mlp_2nn, small_cnn
from fl_tff.models.model_fn import (KerasModelFn, ModelFn, batched_input_spec, build_model_fn,
                                    trainable_size,
                                    keras_model_factory, model_fn_for_dataset)
