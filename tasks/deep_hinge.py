"""Stage deep_hinge (approach ``deep_hinge``): the encoder's network trained end to end with squared hinge.

Output artifact ``deep_hinge``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

from tasks.config import EncoderConfig
from tasks.core.layout import Layout
from tasks.core.margin import budget_used
from tasks.core.margin_models import keras_predictor
from tasks.core.networks import keras_rows, train
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.cache import stage
from tasks.store.outputs import write_model_artifact
from tasks.store.progress import OwnTime
from tasks.store.runlog import epoch_progress


def network_config(encoder: ArtifactRef, config: EncoderConfig) -> EncoderConfig:
    """The architecture ``deep_hinge`` trains: the ``encoder`` artifact's, or after an ``auto`` search
    the best candidate that is a network (``config``'s own when none is), with the squared-hinge objective."""
    stored = read_json(encoder, "config.json")
    if stored.get("selection") is not None:
        stored = stored.get("network") or {}
    fields = {k: v for k, v in stored.items() if k in EncoderConfig.model_fields}
    return (EncoderConfig(**fields) if fields else config).model_copy(update={"objective": "squared_hinge"})


@stage("deep_hinge")
def deep_hinge(scaled: ArtifactRef, encoder: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """The encoder's architecture with a one-vs-rest squared-hinge head, trained end to end, early stopping on val."""
    cfg = network_config(encoder, config)
    X, y, val, meta = keras_rows(scaled, cfg)
    layout = Layout.from_meta(meta)
    with OwnTime() as fit:  # not counting the wait for the Keras lock
        model, history = train(X, y, *val, len(meta["classes"]), cfg, layout,
                               callbacks=(epoch_progress("deep_hinge"),))
    return write_model_artifact(root, "deep_hinge", {"scaled": scaled.sha256, "config": cfg.model_dump()},
                                lambda w: model.save(w.path("model.keras")), keras_predictor(model), scaled,
                                fit.seconds, extra={"history.json": history, "budget.json": budget_used(X, cfg, history)})
