"""MiniRocket: fixed random-convolution features for sequences, fitted in one pass (no gradient training).

Written from Dempster, Schmidt and Webb, "MiniRocket: A Very Fast (Almost) Deterministic Transform for
Time Series Classification" (KDD 2021):

* **Kernels.** 84 kernels of length 9, every way of choosing 3 of the 9 positions to weigh 2 and the other
  6 to weigh -1 (so each kernel's weights sum to 0).
* **Dilations.** Per kernel about ``num_features / 84`` features, spread over dilations
  ``floor(2^x)`` for ``x`` evenly spaced in ``[0, log2((T - 1) / 8)]`` (at most 32 of them, duplicates
  merged and their features kept): kernels see from 9 to ``T`` steps.
* **Padding.** Convolutions are zero-padded to the series length. Combinations of dilation ``i`` and
  kernel ``k`` with ``i + k`` even pool over every position, the others over the positions where the
  kernel fits without padding.
* **Biases.** For each (dilation, kernel), the convolution output of one training series drawn at random;
  its features' biases are its quantiles at the low-discrepancy fractions ``(j * golden ratio) mod 1``.
* **Pooling.** PPV, the proportion of positive values: ``mean_t [C(t) > bias]``.
* **Channels.** A multichannel series (the paper's multivariate variant): each (dilation, kernel) adds
  the convolutions of ``floor(2^u)`` channels, ``u ~ U(0, log2(min(C, 9) + 1))``, drawn at random.
* **Short series.** A series shorter than 9 steps is zero-padded at its end to 9 steps (dilation 1 only).

Rows are time-major ``(T, C)`` (`tasks.core.layout`). `fit` draws everything from ``seed``; `transform`
is the reference implementation in numpy (a loop per row), against which the Keras layer
(`tasks.core.layers.MiniRocket`) is tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

KERNEL_LENGTH = 9
KERNELS = np.array(list(combinations(range(KERNEL_LENGTH), 3)), dtype=np.int64)  # (84, 3): the positions weighing 2
N_KERNELS = len(KERNELS)
MAX_DILATIONS = 32
DEFAULT_FEATURES = 9_996  # the paper's 10,000, rounded down to a multiple of 84


@dataclass
class RocketParams:
    """A fitted transform: ``dilations`` (D,), ``per_dilation`` (D,) features per kernel at each dilation,
    ``channels`` (D * 84, C) 0/1 masks of the channels each (dilation, kernel) adds, ``biases``
    (84 * per_dilation.sum(),) in (dilation, kernel, feature) order; ``length`` the (padded) series length."""

    length: int
    n_channels: int
    dilations: np.ndarray
    per_dilation: np.ndarray
    channels: np.ndarray
    biases: np.ndarray

    @property
    def n_features(self) -> int:
        return int(N_KERNELS * self.per_dilation.sum())


def padded_length(length: int) -> int:
    """The length a series is read at: at least `KERNEL_LENGTH` (shorter ones are zero-padded at their end)."""
    return max(int(length), KERNEL_LENGTH)


def fit_dilations(length: int, num_features: int = DEFAULT_FEATURES,
                  max_dilations: int = MAX_DILATIONS) -> tuple[np.ndarray, np.ndarray]:
    """(dilations, features per kernel at each) for series of ``length`` steps (module docstring)."""
    per_kernel = max(num_features // N_KERNELS, 1)
    n = min(per_kernel, max_dilations)
    exponent = np.log2((padded_length(length) - 1) / (KERNEL_LENGTH - 1))
    dilations, counts = np.unique(np.logspace(0, exponent, n, base=2).astype(np.int64), return_counts=True)
    counts = (counts * (per_kernel / n)).astype(np.int64)
    i = 0
    while counts.sum() < per_kernel:  # the rounding's remainder, one at a time from the shortest dilation
        counts[i] += 1
        i = (i + 1) % len(counts)
    return dilations, counts


def quantiles(n: int) -> np.ndarray:
    """The low-discrepancy fractions ``(j * golden ratio) mod 1``, ``j = 1..n``."""
    return ((np.arange(1, n + 1) * ((np.sqrt(5) + 1) / 2)) % 1).astype(np.float32)


def convolve(x: np.ndarray, dilation: int) -> np.ndarray:
    """Every kernel's zero-padded convolution of one series ``x`` (T, C) at ``dilation``: (84, T, C).

    ``C_k(t) = sum_j w_kj x(t + (j - 4) * dilation)``, ``w_kj = 2`` at the kernel's three positions, else -1.
    """
    length = x.shape[0]
    pad = (KERNEL_LENGTH // 2) * dilation
    padded = np.pad(x, ((pad, pad), (0, 0)))
    shifted = np.stack([padded[j * dilation:j * dilation + length] for j in range(KERNEL_LENGTH)])  # (9, T, C)
    total = shifted.sum(axis=0)
    return 3 * shifted[KERNELS].sum(axis=1) - total  # -1 everywhere, +3 more at the three positions


def _as_series(X: np.ndarray, length: int, n_channels: int) -> np.ndarray:
    """Flat time-major rows (n, T * C) as (n, T', C), zero-padded to `padded_length`."""
    X = np.asarray(X, dtype=np.float32).reshape(len(X), length, n_channels)
    if length < KERNEL_LENGTH:
        X = np.pad(X, ((0, 0), (0, KERNEL_LENGTH - length), (0, 0)))
    return X


def fit(X: np.ndarray, length: int, n_channels: int = 1, num_features: int = DEFAULT_FEATURES,
        seed: int = 0) -> RocketParams:
    """Fit the transform on training rows ``X`` (n, T * C), time-major: dilations, channel draws, biases."""
    rng = np.random.default_rng(seed)
    series = _as_series(X, length, n_channels)
    dilations, per_dilation = fit_dilations(length, num_features)
    combos = len(dilations) * N_KERNELS
    masks = np.zeros((combos, n_channels), dtype=np.float32)
    top = np.log2(min(n_channels, KERNEL_LENGTH) + 1)
    for c in range(combos):
        k = min(int(2 ** rng.uniform(0, top)), n_channels)
        masks[c, rng.choice(n_channels, k, replace=False)] = 1.0
    fractions = quantiles(int(N_KERNELS * per_dilation.sum()))
    biases, at = [], 0
    for i, d in enumerate(dilations):
        f = int(per_dilation[i])
        for k in range(N_KERNELS):
            example = series[rng.integers(len(series))]
            out = (convolve(example, int(d))[k] * masks[i * N_KERNELS + k]).sum(axis=1)  # (T,)
            biases.append(np.quantile(out, fractions[at:at + f]).astype(np.float32))
            at += f
    return RocketParams(length=series.shape[1], n_channels=n_channels, dilations=dilations,
                        per_dilation=per_dilation, channels=masks, biases=np.concatenate(biases))


def pooled_positions(length: int, dilation: int, dilation_index: int, kernel: int) -> slice:
    """The positions PPV averages over: all of them when ``dilation_index + kernel`` is even, else those where
    the kernel fits without padding."""
    if (dilation_index + kernel) % 2 == 0:
        return slice(0, length)
    pad = (KERNEL_LENGTH // 2) * dilation
    return slice(pad, length - pad)


def transform(X: np.ndarray, params: RocketParams, length: int) -> np.ndarray:
    """The features of rows ``X`` (n, T * C): (n, `RocketParams.n_features`) PPVs, by loops (the reference)."""
    series = _as_series(X, length, params.n_channels)
    out = np.zeros((len(series), params.n_features), dtype=np.float32)
    for r, x in enumerate(series):
        at = 0
        for i, d in enumerate(params.dilations):
            f = int(params.per_dilation[i])
            conv = convolve(x, int(d))
            for k in range(N_KERNELS):
                c = (conv[k] * params.channels[i * N_KERNELS + k]).sum(axis=1)[
                    pooled_positions(params.length, int(d), i, k)]
                out[r, at:at + f] = (c[:, None] > params.biases[at:at + f][None, :]).mean(axis=0)
                at += f
    return out
