"""Nearest neighbours, the simple classic that margin methods should beat: Euclidean, and dynamic time
warping (DTW) for sequences.

DTW aligns two series ``[T, C]`` by the warping path of least summed squared difference,
within a Sakoe-Chiba band of ``window`` steps around the diagonal; it is computed here with
NumPy, vectorised over every pair of a block of query rows and all reference rows (memory
``block x n_ref x T`` floats).
"""

from __future__ import annotations

import numpy as np

_BLOCK_VALUES = 8_000_000  # float64 values of one block's DTW rows (64 MB)


def euclidean(Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(q, r) squared Euclidean distances between rows of Q (q, d) and R (r, d)."""
    d = (Q * Q).sum(1)[:, None] - 2.0 * Q @ R.T + (R * R).sum(1)[None, :]
    return np.maximum(d, 0.0)


def dtw(Q: np.ndarray, R: np.ndarray, window: int) -> np.ndarray:
    """(q, r) DTW distances (summed squared differences on the best path) between series.

    Args:
        Q: (q, T, C) query series; R: (r, T, C) reference series, of the same length.
        window: the band: step i of one series may meet steps i - window .. i + window of the other.
    """
    q, T, _ = Q.shape
    out = np.empty((q, len(R)))
    Rt = np.ascontiguousarray(R.transpose(1, 2, 0), dtype=np.float32)  # (T, C, r): one step's values together
    block = max(1, _BLOCK_VALUES // max(1, len(R) * T))
    for start in range(0, q, block):
        A = np.ascontiguousarray(Q[start:start + block].transpose(1, 2, 0), dtype=np.float32)  # (T, C, b)
        prev = np.full((T, A.shape[2], len(R)), np.inf, dtype=np.float32)  # (T, b, r): step j contiguous
        for i in range(T):
            cur = np.full_like(prev, np.inf)
            for j in range(max(0, i - window), min(T, i + window + 1)):
                diff = A[i][:, :, None] - Rt[j][:, None, :]  # (C, b, r)
                cost = np.einsum("cbr,cbr->br", diff, diff) if diff.shape[0] > 1 else np.square(diff[0])
                if i == 0 and j == 0:
                    cur[j] = cost
                    continue
                best = prev[j]
                if j > 0:
                    best = np.minimum(best, np.minimum(cur[j - 1], prev[j - 1]))
                np.add(cost, best, out=cur[j])
            prev = cur
        out[start:start + block] = prev[T - 1]
    return out


def vote(D: np.ndarray, y_ref: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Class indices by majority of the ``k`` nearest references (rows of D); ties go to the class of
    the nearest neighbour among the tied classes."""
    k = min(k, D.shape[1])
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    labels = y_ref[order]
    counts = np.zeros((len(D), n_classes), dtype=np.int64)
    np.add.at(counts, (np.arange(len(D))[:, None], labels), 1)
    top = counts.max(1, keepdims=True)
    tied = counts == top
    out = np.empty(len(D), dtype=np.int64)
    for i in range(len(D)):  # the first neighbour (nearest first) whose class is among the tied
        out[i] = next(int(c) for c in labels[i] if tied[i, c])
    return out
