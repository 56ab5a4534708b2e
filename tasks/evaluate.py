"""Stage 6, evaluate: the SVC on the test features, reported for people and for machines.

Output artifact ``report``: ``metrics.json`` (accuracy, macro-F1, per-class report,
confusion matrix; nothing time- or machine-dependent, so equal inputs give equal bytes)
and ``report.md``. In a Prefect run it also publishes the report as a markdown
artifact and the per-class scores as a table artifact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import EvaluateConfig
from tasks.ingest import feature_matrix, read_dataset
from tasks.svc import load_svc


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true, y_pred: (n,) class indices into ``classes``.
    Returns:
        JSON-ready dict; ``confusion[i][j]`` counts rows of class i predicted as j.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n_test": int(len(y_true)),
        "classes": classes,
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        ],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def render_markdown(metrics: dict[str, Any], source: str, digits: int) -> str:
    """The human report: headline scores, per-class table, confusion matrix."""
    fmt = f"{{:.{digits}f}}"
    lines = [
        f"# marginflow report: {source}",
        "",
        "Encoder features -> SVC, scored on the held-out test split.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {fmt.format(metrics['accuracy'])} |",
        f"| test macro-F1 | {fmt.format(metrics['macro_f1'])} |",
        f"| validation accuracy | {fmt.format(metrics['val_accuracy'])} |",
        f"| test rows | {metrics['n_test']} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for row in metrics["per_class"]:
        lines.append(
            f"| {row['class']} | {fmt.format(row['precision'])} | {fmt.format(row['recall'])} "
            f"| {fmt.format(row['f1'])} | {row['support']} |"
        )
    names = [str(c) for c in metrics["classes"]]
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ pred | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, metrics["confusion"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _publish(markdown: str, metrics: dict[str, Any]) -> None:
    """Prefect markdown and table artifacts, when running inside a Prefect task run."""
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=markdown, key="marginflow-report", description="marginflow evaluation report")
    create_table_artifact(
        table=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in metrics["per_class"]],
        key="marginflow-per-class",
        description=f"Per-class scores; test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}",
    )


@stage("evaluate")
def evaluate(features: ArtifactRef, svc: ArtifactRef, config: EvaluateConfig, root: str) -> ArtifactRef:
    """Score the ``svc`` artifact on the test rows of ``features``; write the ``report`` artifact."""
    frame, meta = read_dataset(features)
    model = load_svc(svc.file("svc.skops"))
    X_test, y_test = feature_matrix(frame, "test")
    X_val, y_val = feature_matrix(frame, "val")
    metrics = score(y_test, model.predict(X_test), meta["classes"])
    metrics["val_accuracy"] = float(np.mean(model.predict(X_val) == y_val)) if len(y_val) else float("nan")
    metrics["source"] = meta["source"]
    markdown = render_markdown(metrics, str(meta["source"]), config.digits)
    params = {"features": features.sha256, "svc": svc.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "report", params) as w:
        w.write_json("metrics.json", metrics)
        w.write_text("report.md", markdown)
    _publish(markdown, metrics)
    return w.ref
