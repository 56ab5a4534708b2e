"""The stage names, shared by the flow and the CLI (no Prefect import, so ``--help`` stays fast)."""

from __future__ import annotations

MAIN = ("ingest", "scale", "train_encoder", "extract_features", "train_svc")
SIDE = ("raw_svc", "linear_hinge", "deep_hinge", "rff_svm")
STAGES = (*MAIN, *SIDE, "evaluate", "bundle")
ALIASES = {"encoder": "train_encoder", "features": "extract_features", "svc": "train_svc"}
CHOICES = STAGES + tuple(ALIASES)
# approach name (as in ``evaluate.approaches`` and the report) -> the stage that trains it
APPROACH_STAGE = {"raw_svc": "raw_svc", "linear_hinge": "linear_hinge", "features_svc": "train_svc",
                  "deep_hinge": "deep_hinge", "rff_svm": "rff_svm"}


def stage_name(name: str) -> str:
    """Canonical stage name for a name or a short alias (``svc`` -> ``train_svc``).

    Raises:
        ValueError: not a stage name or alias.
    """
    name = ALIASES.get(name, name)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r} (one of {', '.join(CHOICES)})")
    return name
