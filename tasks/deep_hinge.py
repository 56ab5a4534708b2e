"""Stage deep_hinge (approach ``deep_hinge``): the encoder network trained end to end with squared hinge.

Output artifact ``deep_hinge``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

from tasks.config import EncoderConfig
from tasks.core.margin_models import keras_predictor
from tasks.core.networks import train
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.outputs import write_model_artifact
from tasks.store.progress import OwnTime
from tasks.store.runlog import epoch_progress
from tasks.store.tables import split_matrices


@stage("deep_hinge")
def deep_hinge(scaled: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """The ``encoder`` architecture with a one-vs-rest squared-hinge head, early stopping on val."""
    data, meta = split_matrices(scaled)
    cfg = config.model_copy(update={"objective": "squared_hinge"})
    with OwnTime() as fit:  # not counting the wait for the Keras lock
        model, history = train(*data["train"], *data["val"], len(meta["classes"]), cfg, str(meta["source"]),
                               callbacks=(epoch_progress(cfg.epochs, "deep_hinge"),))
    return write_model_artifact(root, "deep_hinge", {"scaled": scaled.sha256, "config": cfg.model_dump()},
                                lambda w: model.save(w.path("model.keras")), keras_predictor(model), data,
                                fit.seconds, extra={"history.json": history})
