"""The files every model stage writes beside its model, so that ``evaluate`` scores all approaches alike.

* ``predictions.json`` - class indices for the val and test rows;
* ``timing.json``      - fit and predict seconds, and ``inputs_seconds``: the work of the artifacts the model
  needed beyond the scaled rows (features_svc: the encoder's search and training and the feature extraction;
  deep_hinge: the encoder search it starts from). Measured, so not part of any comparison of runs;
* ``search.json``      - only after ``svc.search``: the chosen point and the CV table.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.kinds import BUDGET, PREDICTIONS, SEARCH, SOLVER, TIMING


def total_seconds(ref: ArtifactRef | None) -> float:
    """The work an artifact took with what it needed: its ``timing.json``'s ``fit_seconds`` plus
    ``inputs_seconds`` (0 for an artifact written without a timing)."""
    if ref is None or TIMING not in ref.files:
        return 0.0
    timing = read_json(ref, TIMING)
    return float(timing.get("fit_seconds", 0.0)) + float(timing.get("inputs_seconds", 0.0))


def write_timing(w: ArtifactWriter, fit_seconds: float, inputs_seconds: float = 0.0, **more: float) -> None:
    """``timing.json``: the artifact's own work (``fit_seconds``), the work of what it needed (``inputs_seconds``)."""
    w.write_json(TIMING, {"fit_seconds": round(fit_seconds, 4), "inputs_seconds": round(inputs_seconds, 4),
                                 **{k: round(v, 4) for k, v in more.items()}})


def write_model_outputs(w: ArtifactWriter, predict, data: dict, fit_seconds: float, inputs_seconds: float = 0.0) -> None:
    """``predictions.json`` (val and test class indices) and ``timing.json`` for a fitted model.

    Args:
        predict: (n, d) rows -> (n,) class indices.
        data: ``{"val": (X, y), "test": (X, y), ...}``, or a table artifact (read ``batch_rows`` rows at a time).
    """
    start = time.perf_counter()
    if isinstance(data, ArtifactRef):  # a table: streamed, a batch at a time
        from tasks.store.tables import batch_rows_of, iter_split, read_meta

        batch = batch_rows_of(read_meta(data))
        preds = {s: [int(v) for X, _ in iter_split(data, s, batch, dtype="float64") for v in predict(X)]
                 for s in ("val", "test")}
    else:
        preds = {s: [int(v) for v in predict(data[s][0])] for s in ("val", "test")}
    predict_seconds = time.perf_counter() - start
    w.write_json(PREDICTIONS, preds)
    write_timing(w, fit_seconds, inputs_seconds, predict_seconds=predict_seconds)


def read_model_outputs(ref: ArtifactRef) -> dict[str, Any]:
    """``{"predictions", "timing", "search"}`` of a model artifact (``search`` None without a search)."""
    return {"predictions": read_json(ref, PREDICTIONS), "timing": read_json(ref, TIMING),
            "search": read_json(ref, SEARCH) if SEARCH in ref.files else None,
            "solver": read_json(ref, SOLVER) if SOLVER in ref.files else None,
            "budget": read_json(ref, BUDGET) if BUDGET in ref.files else None}


def write_model_artifact(root: str, kind: str, params: dict[str, Any], save, predict, data: dict,
                         fit_seconds: float, extra: dict[str, Any] | None = None,
                         inputs_seconds: float = 0.0) -> ArtifactRef:
    """Write one model stage's artifact: its model files, extra JSON files, predictions and timing.

    Args:
        save: ``save(w)`` writes the model's own files into the `ArtifactWriter` ``w``.
        predict: (n, d) rows -> (n,) class indices.
        extra: file name -> JSON object, written beside the model (``None`` values are skipped).
    """
    with ArtifactWriter(root, kind, params) as w:
        save(w)
        for name, obj in (extra or {}).items():
            if obj is not None:
                w.write_json(name, obj)
        write_model_outputs(w, predict, data, fit_seconds, inputs_seconds)
    return w.ref
