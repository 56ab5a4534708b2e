"""The ``approx`` SVM solver: a Nystroem kernel map and a ridge fit solved in closed form.

A kernel SVM's decision function is a kernel expansion ``f(x) = sum_j alpha_j k(x, c_j) + b``. With M
centres ``c_j`` (a seeded sample of training rows) and the squared loss on one-vs-rest targets in
{-1, +1} (what EigenPro and FALKON use for kernel classifiers; it matches the hinge on MNIST-like data),
the fit is one linear solve: minimise

    sum_i w_i ||f(x_i) - y_i||^2 + lambda * alpha' K_MM alpha

over (alpha, b), where ``K_MM`` is the kernel between the centres (the RKHS norm of ``f``) and ``w_i`` is
a row's class weight. The data enter only through the sums ``[K, 1]' W [K, 1]`` ((M+1) x (M+1)) and
``[K, 1]' W Y`` ((M+1) x k) over the training rows, where ``K`` is the (rows x M) kernel between rows and
centres: `moments` accumulates them a chunk of rows at a time (memory: the chunk and the sums, never the
rows), and sums over disjoint row sets add (`Moments.__add__`), so partitions can be summed on
different workers. `Solution` then works in the coordinates ``phi(x) = E^-1/2 U' k(x, C)`` with
``K_MM = U E U'`` (the Nystroem feature map; directions with eigenvalues below `RANK_TOL` of the largest,
which float32 kernels cannot resolve, left out): ``(G + lambda I) w = q`` is well conditioned for any
``lambda > 0``, and one Cholesky per ``lambda`` gives the whole sweep.

``lambda = 1 / C``: the same trade-off as the SVC's C (a larger C, a closer fit), with the squared loss
in place of the hinge. `NystroemRidge` is the fitted model: ``predict`` and ``decision_function`` as
scikit-learn's ``SVC`` (one-vs-rest scores, a single column for two classes).
The ``linear`` kernel needs no centres: the map is the identity and the fit is ridge regression.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

CHUNK_ROWS = 4096  # rows mapped at a time: a 4096 x 4000 float32 kernel block is 66 MB
MIN_COMPONENTS, MAX_COMPONENTS = 500, 4000
COMPONENTS_PER_ROOT_N = 15  # M = 15 sqrt(n) within the bounds above (benchmarks/RESULTS.md, "Large data")
RANK_TOL = 1e-6  # K_MM's eigen-directions below this share of its largest eigenvalue are left out
SWEEP = (0.01, 0.1, 1.0, 10.0, 100.0)  # lambda = factor / C, chosen on validation rows (`choose_lambda`)


def components_for(n_train: int, setting: int | str = "auto") -> int:
    """Nystroem centres for ``n_train`` training rows: ``setting`` (an int), or for ``"auto"``
    ``15 sqrt(n)`` kept within [500, 4000]; never more than the training rows."""
    m = setting if isinstance(setting, int) else round(COMPONENTS_PER_ROOT_N * math.sqrt(max(n_train, 1)))
    if not isinstance(setting, int):
        m = min(max(m, MIN_COMPONENTS), MAX_COMPONENTS)
    return max(1, min(m, n_train))


def memory_bytes(m: int, k: int) -> int:
    """Peak bytes of a fit with ``m`` centres and ``k`` score columns, beyond the rows read: the float64
    sums (held twice while they are added) and the solve's three (M+1)^2 float64 matrices, plus one
    float32 kernel block of `CHUNK_ROWS` rows."""
    return 8 * (5 * (m + 1) ** 2 + 3 * (m + 1) * k) + 4 * CHUNK_ROWS * (m + 1)


@dataclass(frozen=True)
class KernelMap:
    """The kernel between rows and fixed centres, in float32. ``kernel``: ``rbf`` (``exp(-gamma |x - c|^2)``),
    ``poly`` (``(gamma x.c + coef0)^degree``), ``sigmoid`` (``tanh(gamma x.c + coef0)``) or ``linear``
    (no centres: the rows themselves), with the meanings scikit-learn's ``SVC`` gives them."""

    kernel: str
    centres: np.ndarray | None  # (M, d) float32, None for linear
    gamma: float = 1.0
    degree: int = 3
    coef0: float = 0.0

    @property
    def width(self) -> int | None:
        """M, the number of columns of the map (None for linear: as many as the row has)."""
        return None if self.centres is None else len(self.centres)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.kernel == "linear":
            return X
        C = self.centres
        dot = X @ C.T
        if self.kernel == "rbf":
            dot *= -2.0
            dot += np.einsum("ij,ij->i", X, X)[:, None]
            dot += np.einsum("ij,ij->i", C, C)[None, :]
            np.maximum(dot, 0.0, out=dot)
            dot *= -self.gamma
            return np.exp(dot, out=dot)
        dot *= self.gamma
        dot += self.coef0
        if self.kernel == "poly":
            return np.power(dot, self.degree, out=dot)
        if self.kernel == "sigmoid":
            return np.tanh(dot, out=dot)
        raise ValueError(f"unknown kernel {self.kernel!r}")

    def gram(self) -> np.ndarray | None:
        """K_MM in float64 (None for linear)."""
        return None if self.centres is None else self(self.centres).astype(np.float64)


def targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest targets in {-1, +1}: (n, k) for k > 2 classes, (n, 1) with +1 for class 1 for two."""
    if n_classes <= 2:
        return np.where(y == 1, 1.0, -1.0).astype(np.float32)[:, None]
    Y = np.full((len(y), n_classes), -1.0, dtype=np.float32)
    Y[np.arange(len(y)), y] = 1.0
    return Y


@dataclass
class Moments:
    """The sums a fit needs: ``A = [K, 1]' W [K, 1]`` and ``b = [K, 1]' W Y`` (float64), and the rows seen."""

    A: np.ndarray
    b: np.ndarray
    rows: int = 0

    @classmethod
    def zeros(cls, width: int, k: int) -> Moments:
        return cls(np.zeros((width + 1, width + 1)), np.zeros((width + 1, k)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.A + other.A, self.b + other.b, self.rows + other.rows)


def moments(batches: Iterable[tuple[np.ndarray, np.ndarray]], kmap: KernelMap, n_classes: int,
            class_weight: dict[int, float] | None = None) -> Moments | None:
    """`Moments` of the rows of ``batches`` ((X, y) pairs), mapped `CHUNK_ROWS` rows at a time (None: no rows)."""
    total: Moments | None = None
    weights = None
    if class_weight:
        weights = np.ones(max(n_classes, max(class_weight) + 1), dtype=np.float32)
        for c, w in class_weight.items():
            weights[c] = w
    for X, y in batches:
        for at in range(0, len(y), CHUNK_ROWS):
            yc = y[at:at + CHUNK_ROWS]
            K = kmap(X[at:at + CHUNK_ROWS])
            F = np.empty((len(yc), K.shape[1] + 1), dtype=np.float32)
            F[:, :-1], F[:, -1] = K, 1.0
            del K
            if total is None:
                total = Moments.zeros(F.shape[1] - 1, 1 if n_classes <= 2 else n_classes)
            Fw = F if weights is None else F * weights[yc][:, None]
            total.A += Fw.T @ F
            total.b += Fw.T @ targets(yc, n_classes)
            total.rows += len(yc)
    return total


class Solution:
    """The centred, whitened problem of summed `Moments`, factorised once: coefficients for any lambda."""

    def __init__(self, m: Moments | None, gram: np.ndarray | None):
        from scipy.linalg import eigh

        if m is None:
            raise ValueError("no training rows")
        A, b = m.A, m.b
        n, g, h = A[-1, -1], A[:-1, -1], b[-1]
        if n <= 0:
            raise ValueError("no training rows (or every class weight is zero)")
        self.n, self.g, self.h = n, g, h
        Ac = A[:-1, :-1] - np.outer(g, g) / n  # the intercept solved out: centred sums
        bc = b[:-1] - np.outer(g, h) / n
        if gram is None:  # linear: plain ridge regression on the rows
            self.G, self.q, self._back = Ac, bc, lambda w: w
        else:  # whiten by K_MM's eigenvectors, leaving out directions below float32 kernels' precision
            e, U = eigh(gram)
            keep = e > e.max() * RANK_TOL
            T = U[:, keep] / np.sqrt(e[keep])
            self.G, self.q, self._back = T.T @ Ac @ T, T.T @ bc, lambda w: T @ w
        self.G = (self.G + self.G.T) / 2
        self._eig = None

    def coefficients(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """(alpha (M, k), intercept (k,)) at ridge penalty ``lam``: by Cholesky, or where rounding has left
        the sums a little indefinite, by their eigenvectors with negative eigenvalues taken as 0."""
        from scipy.linalg import cho_factor, cho_solve, eigh

        if self._eig is None:
            G = self.G.copy()
            G[np.diag_indices_from(G)] += lam
            try:
                w = cho_solve(cho_factor(G, lower=True, overwrite_a=True), self.q)
            except np.linalg.LinAlgError:
                self._eig = eigh(self.G)
        if self._eig is not None:
            s, V = self._eig
            w = V @ ((V.T @ self.q) / (np.maximum(s, 0.0) + lam)[:, None])
        alpha = self._back(w)
        return alpha, (self.h - self.g @ alpha) / self.n


def vote(scores: np.ndarray) -> np.ndarray:
    """Class indices from one-vs-rest scores (..., k): the largest, or for one column (two classes) 1 where
    it is positive, as ``SVC`` decides."""
    return (scores[..., 0] > 0).astype(np.int64) if scores.shape[-1] == 1 else scores.argmax(axis=-1)


class NystroemRidge:
    """A fitted ``approx`` model: ``decision_function(X) = k(X, centres) @ coef_ + intercept_`` and
    ``predict``, as scikit-learn's ``SVC`` gives them (``classes_`` are the class indices)."""

    def __init__(self, kmap: KernelMap, coef: np.ndarray, intercept: np.ndarray, n_classes: int, lam: float):
        self.kernel, self.gamma, self.degree, self.coef0 = kmap.kernel, float(kmap.gamma), kmap.degree, kmap.coef0
        self.centres = kmap.centres
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.classes_ = np.arange(max(n_classes, 2))
        self.lambda_ = float(lam)

    @property
    def kernel_map(self) -> KernelMap:
        return KernelMap(self.kernel, self.centres, self.gamma, self.degree, self.coef0)

    @property
    def n_components(self) -> int:
        return 0 if self.centres is None else len(self.centres)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """(n, k) scores, the rows mapped `CHUNK_ROWS` at a time."""
        kmap = self.kernel_map
        X = np.asarray(X)
        out = np.empty((len(X), self.coef_.shape[1]))
        for at in range(0, len(X), CHUNK_ROWS):
            out[at:at + CHUNK_ROWS] = kmap(X[at:at + CHUNK_ROWS]) @ self.coef_ + self.intercept_
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        out = self._scores(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[vote(self._scores(X))]


def choose_lambda(solution: Solution, kmap: KernelMap, C: float, val: Iterable[tuple[np.ndarray, np.ndarray]] | None
                  ) -> tuple[float, tuple[np.ndarray, np.ndarray], list[dict]]:
    """(lambda, its (alpha, intercept), sweep table): ``1 / C`` without validation rows; with them, the factor
    of `SWEEP` times ``1 / C`` with the best validation accuracy (ties: the factor nearest 1, then the larger)."""
    base = 1.0 / C
    if val is None:
        return base, solution.coefficients(base), []
    lams = [f * base for f in SWEEP]
    coefs = [solution.coefficients(lam) for lam in lams]
    W = np.concatenate([a for a, _ in coefs], axis=1)
    B = np.concatenate([b for _, b in coefs])
    k = coefs[0][0].shape[1]
    right, seen = np.zeros(len(lams)), 0
    for X, y in val:
        for at in range(0, len(y), CHUNK_ROWS):
            S = (kmap(X[at:at + CHUNK_ROWS]) @ W + B).reshape(-1, len(lams), k)
            right += (vote(S) == y[at:at + CHUNK_ROWS, None]).sum(axis=0)
            seen += len(S)
    if not seen:
        return base, solution.coefficients(base), []
    table = [{"lambda": lam, "factor": f, "val_accuracy": float(r / seen)}
             for lam, f, r in zip(lams, SWEEP, right, strict=True)]
    best = max(range(len(table)), key=lambda i: (round(table[i]["val_accuracy"], 12), -abs(math.log(SWEEP[i])),
                                                SWEEP[i]))
    return lams[best], coefs[best], table


def fit(kmap: KernelMap, m: Moments | None, n_classes: int, C: float,
        val: Iterable[tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[NystroemRidge, list[dict]]:
    """The fitted model from the summed `Moments` (lambda swept on ``val`` rows when given), and the sweep."""
    lam, (alpha, intercept), table = choose_lambda(Solution(m, kmap.gram()), kmap, C, val)
    return NystroemRidge(kmap, alpha, intercept, n_classes, lam), table


def pick_centres(sample: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` rows of ``sample`` (a seeded choice, in sample order) as float32 centres."""
    rows = np.sort(np.random.default_rng([seed, 7]).choice(len(sample), size=min(m, len(sample)), replace=False))
    return np.ascontiguousarray(sample[rows], dtype=np.float32)
