"""Stage evaluate: every approach scored on the same test rows, reported for people and machines.

Output artifact ``report``:

* ``metrics.json`` - the main path's (features_svc) accuracy, macro-F1, per-class report and
  confusion matrix at the top level, ``encoder`` (the rows' layout, the encoder kind kept and,
  after an ``auto`` search, every candidate's validation score), and per approach: accuracy, macro-F1, fit and predict
  seconds, and a one-line statement of what it optimises. The ``*_seconds`` fields are
  measured when each model is fitted; every other field is a function of data, config and seed.
* ``report.md`` and ``report.html`` (self-contained, images embedded), plus the PNGs:
  ``approaches.png`` (bar chart), ``confusion.png`` (every approach's confusion matrix in one grid),
  ``curves_<model>.png`` (training and validation curves of the encoder and of every Keras approach),
  listed with their titles in ``charts.json``. ``ranking``: the approaches by test accuracy with 95 %
  intervals and paired differences from the best (`tasks.core.metrics.ranking`).

The pipeline flow publishes the report to the dashboard on every run, cached or not
(`tasks.ops.runreport`), with the run's own facts (version, date, run) at the top.
"""

from __future__ import annotations

from tasks.catalog import skip_reason
from tasks.config import EvaluateConfig
from tasks.core.metrics import compare
from tasks.core.report import plot_approaches, plot_confusions, plot_history, render_html, render_report
from tasks.errors import InputError
from tasks.schema import SPLITS
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.kinds import (
    APPROACHES_CHART,
    CHARTS,
    CONFUSION_CHART,
    HISTORY,
    METRICS,
    REPORT_HTML,
    REPORT_MD,
    curves_chart,
    encoder_record,
)
from tasks.store.outputs import read_model_outputs
from tasks.store.tables import batch_rows_of, labels_and_splits, read_meta


@stage("evaluate", imports=())
def evaluate(scaled: ArtifactRef, encoder: ArtifactRef | None, models: dict[str, ArtifactRef | None],
             config: EvaluateConfig, root: str) -> ArtifactRef:
    """Score each approach's test predictions (``models``: approach -> its model artifact, None when the
    approach was skipped at this size: `tasks.catalog.skip_reason`); write ``report``."""
    meta = read_meta(scaled)
    n_train = int(meta["split_sizes"]["train"])
    skipped = {name: skip_reason(name, n_train, batch_rows_of(meta)) or "skipped"
               for name, ref in models.items() if ref is None}
    models = {name: ref for name, ref in models.items() if ref is not None}
    if not models:
        raise InputError(f"evaluate: every approach was skipped ({'; '.join(skipped.values())})")
    y, split = labels_and_splits(scaled)  # one read of the two small columns
    y_test, y_val = y[split == SPLITS.index("test")], y[split == SPLITS.index("val")]
    metrics = compare(y_test, y_val, {name: read_model_outputs(ref) for name, ref in models.items()}, meta["classes"])
    metrics["source"] = meta["source"]
    metrics["n_rows"] = meta["n_rows"]
    if skipped:
        metrics["skipped"] = skipped
    if encoder is not None:
        record = encoder_record(encoder)
        metrics["encoder"] = {"layout": meta.get("layout"), "kind": record.kind, "candidate": record.candidate,
                              "selection": record.selection, "budget": record.budget}
    histories = {"encoder": read_json(encoder, HISTORY)} if encoder is not None else {}
    histories.update({n: read_json(ref, HISTORY) for n, ref in models.items() if HISTORY in ref.files})
    histories = {n: h for n, h in histories.items() if h.get("loss")}  # identity has nothing to plot
    charts = [("test accuracy per approach", APPROACHES_CHART)]
    charts.append(("confusion matrices (test rows; colour: share of the true class, number: rows)", CONFUSION_CHART))
    charts += [(f"training curves: {n}", curves_chart(n)) for n in histories]
    params = {"scaled": scaled.sha256, "models": {k: v.sha256 for k, v in models.items()},
              "skipped": sorted(skipped), "config": config.model_dump()}
    with ArtifactWriter(root, "report", params) as w:
        w.write_json(METRICS, metrics)
        plot_approaches(metrics, w.path(APPROACHES_CHART))
        plot_confusions(metrics["approaches"], meta["classes"], w.path(CONFUSION_CHART))
        for name, history in histories.items():  # linear_hinge and rff_svm keep their last epoch, not the best
            plot_history(history, w.path(curves_chart(name)), name, restores_best=name in ("encoder", "deep_hinge"))
        w.write_json(CHARTS, charts)
        images = {name: w.path(name).read_bytes() for _, name in charts}
        body = render_report(metrics, config.digits, charts)
        w.write_text(REPORT_MD, body)
        w.write_text(REPORT_HTML, render_html(body, images))
    return w.ref
