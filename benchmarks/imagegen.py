"""A realistic large image table: 28 x 28 handwritten digits, generated locally, at any size.

Each row is one of scikit-learn's 1,797 bundled 8 x 8 digit images, upsampled to 24 x 24
(bilinear), placed at a random offset of 0-4 pixels in each direction inside a 28 x 28 frame
(so the same digit lands anywhere in a 5 x 5 grid of positions), multiplied by a random
contrast in [0.8, 1.2] and given Gaussian pixel noise (sigma 1.5 % of full scale), clipped
to 0..255: the statistics of MNIST-style data, not random blobs. Rows drawn from source
images 0..1299 are ``train`` (val is carved from them by the pipeline), rows from source
images 1300..1796 are ``test``: the test digits were written by people the model never saw,
as in a real hold-out. Columns ``px0 .. px783`` (row-major, float32), ``label`` (0-9) and
``split``. Deterministic in (n, seed); written ``batch`` rows at a time, so generating a
million rows holds one batch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SIDE, INNER, SHIFT = 28, 24, 4
TEST_FROM = 1300


@functools.cache
def _sources() -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.stack([zoom(im, INNER / 8, order=1) for im in d.images]) * (255.0 / 16.0)
    return images.astype(np.float32), d.target.astype(np.int64)


def rows(n: int, seed: int, test_share: float = 0.2, start: int = 0) -> tuple:
    """Rows ``start .. start + n`` of the table of ``seed``: (X (n, 784) float32, label (n,), split (n,) str)."""
    images, target = _sources()
    rng = np.random.default_rng([seed, start])
    test = rng.random(n) < test_share
    source = np.where(test, rng.integers(TEST_FROM, len(images), n), rng.integers(0, TEST_FROM, n))
    dy, dx = rng.integers(0, SHIFT + 1, n), rng.integers(0, SHIFT + 1, n)
    contrast = rng.uniform(0.8, 1.2, n).astype(np.float32)
    out = np.zeros((n, SIDE, SIDE), dtype=np.float32)
    for oy in range(SHIFT + 1):
        for ox in range(SHIFT + 1):
            at = np.flatnonzero((dy == oy) & (dx == ox))
            out[at, oy:oy + INNER, ox:ox + INNER] = images[source[at]]
    out *= contrast[:, None, None]
    out += rng.normal(0.0, 0.015 * 255, out.shape).astype(np.float32)
    np.clip(out, 0, 255, out=out)
    return out.reshape(n, SIDE * SIDE), target[source], np.where(test, "test", "train")


def write(path: str | Path, n: int, seed: int = 0, batch: int = 50_000, row_group: int = 10_000) -> Path:
    """Write ``n`` rows to a Parquet file, generated ``batch`` rows at a time, in row groups of ``row_group`` rows
    (a Parquet file is read a row group at a time, so its row groups bound what reading it holds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    names = [f"px{i}" for i in range(SIDE * SIDE)] + ["label", "split"]
    writer = None
    try:
        for start in range(0, n, batch):
            X, y, split = rows(min(batch, n - start), seed, start=start)
            table = pa.Table.from_arrays([pa.array(X[:, j]) for j in range(X.shape[1])]
                                         + [pa.array(y), pa.array(split)], names=names)
            writer = writer or pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table, row_group_size=row_group)
    finally:
        if writer is not None:
            writer.close()
    return path
