"""Serialisable Keras 3 layers of marginflow: ``RandomFourierFeatures`` (the RBF kernel) and
``RandomShift1D`` (signal augmentation while training).

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


@keras.saving.register_keras_serializable(package="marginflow")
class RandomShift(keras.layers.Layer):
    """Training-time augmentation: shift each signal or image by a random whole number of steps.

    Works on flat rows (batch, d) that are a signal of length ``d`` (``image_shape=None``)
    or an image ``image_shape = [H, W, C]`` with ``H * W * C = d``, channels last. Each
    training row is shifted by ``s`` steps along the signal, or by ``(sy, sx)`` pixels,
    each drawn uniformly from ``[-max_shift, max_shift]`` per row; the edge value is
    repeated into the gap. At inference (``training=False``) the layer is the identity,
    so features and predictions do not depend on it.

    Input and output shape ``(batch, d)``.
    """

    def __init__(self, max_shift: int, image_shape: list[int] | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(max_shift) < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)
        self.image_shape = [int(v) for v in image_shape] if image_shape else None
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def _draw(self, n):
        return keras.random.randint((n, 1), -self.max_shift, self.max_shift + 1, seed=self.seed_generator)

    def call(self, inputs, training=False):
        if not training or self.max_shift == 0:
            return inputs
        ops = keras.ops
        n, d = ops.shape(inputs)[0], inputs.shape[-1]
        if self.image_shape is None:
            index = ops.clip(ops.arange(d)[None, :] - self._draw(n), 0, d - 1)
        else:
            h, w, c = self.image_shape
            flat = np.arange(d)  # position -> (row, col, channel), channels last
            row, col, chan = flat // (w * c), (flat // c) % w, flat % c
            rows = ops.clip(ops.convert_to_tensor(row)[None, :] - self._draw(n), 0, h - 1)
            cols = ops.clip(ops.convert_to_tensor(col)[None, :] - self._draw(n), 0, w - 1)
            index = (rows * w + cols) * c + ops.convert_to_tensor(chan)[None, :]
        return ops.take_along_axis(inputs, index, axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift, "image_shape": self.image_shape, "seed": self.seed}


@keras.saving.register_keras_serializable(package="marginflow")
class RandomAffine(keras.layers.Layer):
    """Training-time augmentation of images: rotate each by a random angle in ``[-max_degrees, max_degrees]`` and
    scale it by a random factor in ``[1 - max_scale, 1 + max_scale]``, about its centre (bilinear, the nearest
    edge pixel repeated into what comes from outside). Flat rows (batch, H * W * C) of ``image_shape``, channels
    last. At inference (``training=False``) the identity.

    Input and output shape ``(batch, d)``.
    """

    def __init__(self, max_degrees: float, max_scale: float, image_shape: list[int], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(max_degrees) <= 180 or not 0 <= float(max_scale) < 1:
            raise ValueError(f"need 0 <= max_degrees <= 180 and 0 <= max_scale < 1, got {max_degrees}, {max_scale}")
        self.max_degrees, self.max_scale = float(max_degrees), float(max_scale)
        self.image_shape = [int(v) for v in image_shape]
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=False):
        if not training or (self.max_degrees == 0 and self.max_scale == 0):
            return inputs
        ops = keras.ops
        n = ops.shape(inputs)[0]
        h, w, c = self.image_shape
        angle = keras.random.uniform((n,), -1.0, 1.0, seed=self.seed_generator) * (self.max_degrees * np.pi / 180)
        scale = 1.0 + keras.random.uniform((n,), -1.0, 1.0, seed=self.seed_generator) * self.max_scale
        # the output pixel (x, y) reads the input at centre + R(-angle) (x, y) - centre) / scale
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        zero = ops.zeros_like(cos)
        transform = ops.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero],
                              axis=1)
        images = ops.image.affine_transform(ops.reshape(inputs, (-1, h, w, c)), transform, interpolation="bilinear",
                                            fill_mode="nearest", data_format="channels_last")
        return ops.reshape(images, (-1, h * w * c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_degrees": self.max_degrees, "max_scale": self.max_scale,
                "image_shape": self.image_shape, "seed": self.seed}


FEATURE_CHUNK = 4  # MiniRocket compares each convolution with this many biases at a time


@keras.saving.register_keras_serializable(package="marginflow")
class MiniRocket(keras.layers.Layer):
    """MiniRocket's transform (`tasks.core.rocket`) as a Keras layer: fixed kernels, dilations and channel
    draws in its config, the fitted biases as a (non-trainable) weight, PPV pooling.

    Input ``(batch, T * C)`` time-major rows, as the pipeline stores them (scaled: with ``unscale`` =
    ``(mean, scale)`` of the scaler, the layer first undoes the per-step standardisation, so the kernels see
    the series' own shape, as the transform was designed for); output ``(batch, 84 * sum(per_dilation))``
    PPVs in [0, 1], or with ``standardize`` each minus its mean and over its standard deviation on the training
    rows (``moments``, kept as weights: the margin of an RBF SVC then weighs every feature alike, as the paper's
    standardised ridge does). Without ``standardize``, equal to `tasks.core.rocket.transform` (a test holds the
    two to the same values).

    Memory per call: about ``84 * batch * T * (9 C + FEATURE_CHUNK)`` floats at a time.
    """

    def __init__(self, length: int, n_channels: int, dilations: list[int], per_dilation: list[int],
                 channels: list[list[float]], unscale: list[list[float]] | None = None, biases=None,
                 standardize: bool = False, moments=None, **kwargs):
        super().__init__(**kwargs)
        self.standardize = bool(standardize)
        self._moments = None if moments is None else [np.asarray(m, dtype="float32") for m in moments]
        self.length, self.n_channels = int(length), int(n_channels)
        self.dilations = [int(d) for d in dilations]
        self.per_dilation = [int(f) for f in per_dilation]
        self.channels = [[float(v) for v in row] for row in channels]
        self.unscale = None if unscale is None else [[float(v) for v in part] for part in unscale]
        self._initial = None if biases is None else np.asarray(biases, dtype="float32")
        self._arrays = None  # `_structure`, made once

    @property
    def n_features(self) -> int:
        from tasks.core.rocket import N_KERNELS

        return N_KERNELS * sum(self.per_dilation)

    def _positions(self) -> np.ndarray:
        """(D, 84, T') 0/1: the positions each (dilation, kernel) pools over (`tasks.core.rocket.pooled_positions`)."""
        from tasks.core.rocket import N_KERNELS, padded_length, pooled_positions

        length = padded_length(self.length)
        where = np.zeros((len(self.dilations), N_KERNELS, length), "float32")
        for i, d in enumerate(self.dilations):
            for k in range(N_KERNELS):
                where[i, k, pooled_positions(length, d, i, k)] = 1.0
        return where

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The biases laid out for the scan: an index (D, 84, width) into the biases, ``width`` the most features
        per kernel at one dilation rounded up to a multiple of `FEATURE_CHUNK`, the padding pointing at one
        extra entry, ``n_features``; and the index of each output feature in the scan's flat (dilation, kernel,
        feature) order."""
        from tasks.core.rocket import N_KERNELS

        per = np.asarray(self.per_dilation)
        width = -(-int(per.max()) // FEATURE_CHUNK) * FEATURE_CHUNK
        index = np.full((len(per), N_KERNELS, width), self.n_features, dtype="int32")
        keep, at = [], 0
        for i, f in enumerate(per):
            for k in range(N_KERNELS):
                index[i, k, :f] = np.arange(at, at + f)
                keep.extend((i * N_KERNELS + k) * width + np.arange(f))
                at += f
        return index, np.asarray(keep, dtype="int32")

    def build(self, input_shape):
        init = keras.initializers.Constant(self._initial) if self._initial is not None else "zeros"
        self.biases = self.add_weight(shape=(self.n_features,), initializer=init, trainable=False, name="biases")
        if self.standardize:  # each feature's mean and scale on the training rows, as weights
            mean, scale = self._moments if self._moments is not None else (None, None)
            self.feature_mean = self.add_weight(
                shape=(self.n_features,), trainable=False, name="feature_mean",
                initializer=keras.initializers.Constant(mean) if mean is not None else "zeros")
            self.feature_scale = self.add_weight(
                shape=(self.n_features,), trainable=False, name="feature_scale",
                initializer=keras.initializers.Constant(scale) if scale is not None else "ones")

    def _structure(self) -> tuple[np.ndarray, ...]:
        """The transform's fixed arrays, `_ppv`'s arguments after the biases (arguments, not constants: one
        compiled program serves every transform of the same shapes, e.g. the folds of a search)."""
        if self._arrays is None:
            index, keep = self._layout()
            self._arrays = (np.asarray(self.dilations, "int32"),
                            (-(-np.asarray(self.per_dilation, "int32") // FEATURE_CHUNK)).astype("int32"),
                            np.asarray(self.channels, "float32").reshape(len(self.dilations), -1, self.n_channels),
                            self._positions(), index, keep)
        return self._arrays

    def _statics(self) -> dict[str, int]:
        from tasks.core.rocket import KERNEL_LENGTH

        return {"length": self.length, "n_channels": self.n_channels,
                "reach": (KERNEL_LENGTH // 2) * max(self.dilations)}

    def _weights(self) -> list:
        """The biases, and with ``standardize`` the features' means and scales: `_output`'s weights."""
        return [self.biases, self.feature_mean, self.feature_scale] if self.standardize else [self.biases]

    def call(self, inputs):
        return _output(inputs, self._weights(), self._structure(), self.unscale, self._statics())

    def features(self, X: np.ndarray, max_floats: int = 2 ** 26) -> np.ndarray:
        """What the layer outputs for rows ``X`` (n, T * C), as float32 numpy, without a Keras model: on JAX one
        compiled program per row-batch shape for the whole process (a Keras model compiles its own, once per
        model). Rows per batch: a power of two keeping one step's ``84 * batch * T * (9 C + FEATURE_CHUNK)``
        floats under ``max_floats`` (256 MiB)."""
        from tasks.core.margin import padded_forward
        from tasks.core.rocket import N_KERNELS, padded_length

        if not self.built:
            self.build((None, self.length * self.n_channels))
        per_row = N_KERNELS * padded_length(self.length) * (9 * self.n_channels + FEATURE_CHUNK)
        size = 1 << max(int(max_floats // per_row).bit_length() - 1, 0)
        if keras.backend.backend() == "jax":
            jitted, weights, structure = _jitted_call(self._statics(), self.unscale), self._weights(), self._structure()
            weights = [w.value for w in weights]

            def forward(chunk):
                return jitted(chunk, weights, structure)
        else:
            forward = self
        return padded_forward(forward, np.asarray(X, dtype="float32"), size).astype("float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_features)

    def get_config(self):
        return {**super().get_config(), "length": self.length, "n_channels": self.n_channels,
                "dilations": self.dilations, "per_dilation": self.per_dilation, "channels": self.channels,
                "unscale": self.unscale, "standardize": self.standardize}


def _ppv(x, biases, dilations, n_chunks, masks, where, index, keep, *, length: int, n_channels: int, reach: int):
    """MiniRocket's PPVs of rows ``x`` (B, T * C), in keras.ops: one scan over the dilations, and inside it a loop
    over that dilation's chunks of `FEATURE_CHUNK` features per kernel, so the compiled program has one body
    whatever the number of dilations and features (a loop unrolled in Python took seconds to compile).

    ``biases`` (n_features,); then `MiniRocket._structure`: ``dilations`` (D,), ``n_chunks`` (D,) chunks per
    dilation, ``masks`` (D, 84, C) channels each kernel adds, ``where`` (D, 84, T') positions pooled,
    ``index`` (D, 84, width) the biases' layout, ``keep`` (n_features,) the outputs' order; ``reach`` the
    zero padding at either end (4 x the largest dilation).
    """
    from tasks.core.rocket import KERNEL_LENGTH, KERNELS, N_KERNELS, padded_length

    ops = keras.ops
    x = ops.reshape(x, (-1, length, n_channels))
    padded = padded_length(length)
    x = ops.pad(x, ((0, 0), (reach, reach + padded - length), (0, 0)))  # zeros beyond either end
    picks = np.zeros((N_KERNELS, KERNEL_LENGTH), "float32")
    picks[np.arange(N_KERNELS)[:, None], KERNELS] = 1.0
    width = index.shape[-1]
    biases = ops.take(ops.concatenate([biases, ops.convert_to_tensor(np.array([np.inf], "float32"))]), index)
    steps = np.arange(padded)[None, :] + reach  # (1, T'): position t of the series
    offsets = np.arange(KERNEL_LENGTH)[:, None] - KERNEL_LENGTH // 2  # (9, 1)

    def dilation(carry, step):
        d, chunks, mask, pooled, bias = step  # bias: (84, width)
        shifted = ops.take(x, ops.reshape(steps + offsets * d, (-1,)), axis=1)  # (B, 9 * T', C)
        shifted = ops.reshape(shifted, (-1, KERNEL_LENGTH, padded, n_channels))
        conv = 3.0 * ops.einsum("kj,bjtc->kbtc", picks, shifted) - ops.sum(shifted, axis=1)[None]
        conv = ops.einsum("kbtc,kc->kbt", conv, mask)  # the channels each kernel adds
        # the positions counted as a (B, 84) tensor of the data's shape: XLA compiles a division by a
        # constant into a multiplication by its reciprocal, which rounds differently from a mean
        sizes = ops.einsum("kbt,kt->bk", ops.cast(ops.equal(conv, conv), "float32"), pooled)

        def chunk(c, out):  # features 4c .. 4c + 3 of every kernel at this dilation
            b = ops.slice(bias, (0, c * FEATURE_CHUNK), (N_KERNELS, FEATURE_CHUNK))
            above = ops.cast(ops.greater(conv[..., None], b[:, None, None, :]), "float32")  # (84, B, T', F)
            counts = ops.einsum("kbtf,kt->bkf", above, pooled)
            # a divisor of the counts' own shape (+ 0 * counts: not a broadcast, which XLA would invert)
            return ops.slice_update(out, (0, 0, c * FEATURE_CHUNK), counts / (sizes[..., None] + 0.0 * counts))

        return carry, ops.fori_loop(0, chunks, chunk, ops.zeros((ops.shape(x)[0], N_KERNELS, width), "float32"))

    _, ppv = ops.scan(dilation, 0, (dilations, n_chunks, masks, where, biases))  # (D, B, 84, width)
    ppv = ops.reshape(ops.transpose(ppv, (1, 0, 2, 3)), (-1, ppv.shape[0] * N_KERNELS * width))
    return ops.take(ppv, keep, axis=1)  # (B, n_features): dilation, kernel, then feature


def _output(x, weights: list, structure: tuple, unscale: list[list[float]] | None, statics: dict[str, int]):
    """What `MiniRocket` outputs for rows ``x``: the scaler undone (``unscale``), the PPVs (`_ppv`), standardised
    when ``weights`` holds the features' means and scales after the biases."""
    if unscale is not None:
        x = x * np.asarray(unscale[1], "float32") + np.asarray(unscale[0], "float32")
    out = _ppv(x, weights[0], *structure, **statics)
    return (out - weights[1]) / weights[2] if len(weights) == 3 else out


_JITTED: dict = {}


def _jitted_call(statics: dict[str, int], unscale: list[list[float]] | None):
    """`_output` as one ``jax.jit`` function of (rows, the layer's weights, its structure) for these static settings,
    kept for the process (standardised or not follows from the weights given: a trace per case)."""
    key = (tuple(sorted(statics.items())), None if unscale is None else tuple(map(tuple, unscale)))
    if key not in _JITTED:
        import jax

        _JITTED[key] = jax.jit(lambda x, weights, structure: _output(x, weights, structure, unscale, statics))
    return _JITTED[key]
