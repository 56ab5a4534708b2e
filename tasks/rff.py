"""``RandomFourierFeatures``: a serialisable Keras 3 layer approximating the RBF kernel.

Imported only by the stages that build or load such a model (it imports Keras).
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="marginflow")
class RandomFourierFeatures(keras.layers.Layer):
    """Random Fourier features for the RBF kernel ``exp(-gamma ||x - y||^2)``.

    Formula: ``z(x) = sqrt(2 / D) * cos(x W + b)`` with ``W ~ N(0, 2 gamma)`` of shape
    (d, D) and ``b ~ U(0, 2 pi)`` of shape (D,), drawn once from ``seed`` and never
    trained, so that ``z(x) . z(y)`` approximates the kernel (Rahimi and Recht, 2007).
    A linear hinge head on ``z`` is then an approximate kernel SVM.

    Args:
        n_components: D, the output width.
        gamma: the kernel's gamma, with scikit-learn's meaning.
        seed: seed of the fixed projection.

    Input shape ``(batch, d)``; output shape ``(batch, D)``.
    """

    def __init__(self, n_components: int, gamma: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.n_components = int(n_components)
        self.gamma = float(gamma)
        self.seed = int(seed)

    def build(self, input_shape):
        d = int(input_shape[-1])
        rng = np.random.default_rng(self.seed)
        w = rng.normal(scale=np.sqrt(2.0 * self.gamma), size=(d, self.n_components)).astype("float32")
        b = rng.uniform(0.0, 2.0 * np.pi, size=(self.n_components,)).astype("float32")
        self.projection = self.add_weight(
            shape=(d, self.n_components), initializer=keras.initializers.Constant(w), trainable=False, name="projection"
        )
        self.offset = self.add_weight(
            shape=(self.n_components,), initializer=keras.initializers.Constant(b), trainable=False, name="offset"
        )

    def call(self, inputs):
        ops = keras.ops
        return ops.sqrt(2.0 / self.n_components) * ops.cos(ops.matmul(inputs, self.projection) + self.offset)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.n_components)

    def get_config(self):
        return {**super().get_config(), "n_components": self.n_components, "gamma": self.gamma, "seed": self.seed}
