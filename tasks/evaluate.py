"""Stage evaluate: every approach scored on the same test rows, reported for people and machines.

Output artifact ``report``:

* ``metrics.json`` - the main path's (features_svc) accuracy, macro-F1, per-class report and
  confusion matrix at the top level, and per approach: accuracy, macro-F1, fit and predict
  seconds, and a one-line statement of what it optimises. The ``*_seconds`` fields are
  measured when each model is fitted; every other field is a function of data, config and seed.
* ``report.md`` and ``report.html`` (self-contained, images embedded), plus the PNGs:
  ``approaches.png`` (bar chart), ``confusion_<approach>.png``, ``training_curves.png``.

In a Prefect run it also publishes the comparison as a table artifact and the report as markdown.
"""

from __future__ import annotations

from tasks.config import EvaluateConfig
from tasks.core.metrics import compare
from tasks.core.report import plot_approaches, plot_confusion, plot_history, render_html, render_markdown
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.outputs import read_model_outputs
from tasks.store.runlog import publish_report
from tasks.store.tables import feature_matrix, read_table


@stage("evaluate")
def evaluate(scaled: ArtifactRef, encoder: ArtifactRef | None, models: dict[str, ArtifactRef],
             config: EvaluateConfig, root: str) -> ArtifactRef:
    """Score each approach's test predictions (``models``: approach -> its model artifact); write ``report``."""
    frame, meta = read_table(scaled)
    _, y_test = feature_matrix(frame, "test")
    _, y_val = feature_matrix(frame, "val")
    metrics = compare(y_test, y_val, {name: read_model_outputs(ref) for name, ref in models.items()}, meta["classes"])
    metrics["source"] = meta["source"]
    markdown = render_markdown(metrics, str(meta["source"]), config.digits)
    params = {"scaled": scaled.sha256, "models": {k: v.sha256 for k, v in models.items()}, "config": config.model_dump()}
    with ArtifactWriter(root, "report", params) as w:
        w.write_json("metrics.json", metrics)
        plot_approaches(metrics, w.path("approaches.png"))
        for name, a in metrics["approaches"].items():
            plot_confusion(a["confusion"], meta["classes"], f"{name}: confusion (test)", w.path(f"confusion_{name}.png"))
        if encoder is not None:
            plot_history(read_json(encoder, "history.json"), w.path("training_curves.png"))
        images = {p.name: p.read_bytes() for p in sorted(w.path("").iterdir()) if p.suffix == ".png"}
        w.write_text("report.md", markdown + "\n" + "".join(f"![{n}]({n})\n" for n in images))
        w.write_text("report.html", render_html(markdown, images))
    publish_report(markdown, [
        {"approach": n, "accuracy": round(a["accuracy"], 4), "macro_f1": round(a["macro_f1"], 4),
         "fit_seconds": a["fit_seconds"], "predict_seconds": a["predict_seconds"], "objective": a["objective"]}
        for n, a in metrics["approaches"].items()
    ], f"{metrics['source']}: approaches compared on {metrics['n_test']} test rows")
    return w.ref
