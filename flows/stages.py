"""The stage names, shared by the flow and the CLI (no Prefect import, so ``--help`` stays fast)."""

from __future__ import annotations

STAGES = ("ingest", "scale", "train_encoder", "extract_features", "train_svc", "evaluate")
ALIASES = {"encoder": "train_encoder", "features": "extract_features", "svc": "train_svc"}
CHOICES = STAGES + tuple(ALIASES)


def stage_name(name: str) -> str:
    """Canonical stage name for a name or a short alias (``svc`` -> ``train_svc``).

    Raises:
        ValueError: not a stage name or alias.
    """
    name = ALIASES.get(name, name)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r} (one of {', '.join(CHOICES)})")
    return name
