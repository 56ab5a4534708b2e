"""Stage deep_hinge (approach ``deep_hinge``): the encoder's network trained end to end with squared hinge.

It starts from the trained network of ``train_encoder`` (after an ``auto`` search, the best candidate that
is a network, ``network.keras``; else the configured encoder itself) with a fresh linear one-vs-rest head,
and fine-tunes every layer with squared hinge for at most a quarter of that network's step budget
(`FINE_TUNE_SHARE`), early stopping on val. Only when there is no trained network (``identity`` was
configured) does it build and train the architecture from scratch, as configured.

Output artifact ``deep_hinge``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``,
``budget.json`` (with ``start``: ``trained network`` or ``scratch``).
"""

from __future__ import annotations

from tasks._rows import keras_rows
from tasks.config import EncoderConfig
from tasks.core.layout import Layout
from tasks.core.margin import budget_used
from tasks.core.margin_models import keras_predictor
from tasks.core.networks import continue_training, load_encoder, save_keras, train, with_hinge_head
from tasks.obs.progress import OwnTime
from tasks.obs.runlog import epoch_progress
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.kinds import BUDGET, ENCODER_MODEL, HISTORY, KERAS_MODEL, NETWORK, encoder_record
from tasks.store.outputs import total_seconds, write_model_artifact

FINE_TUNE_SHARE = 0.25  # of the network's step budget; its patience at most FINE_TUNE_PATIENCE epochs
FINE_TUNE_PATIENCE = 10


def network_config(encoder: ArtifactRef, config: EncoderConfig) -> EncoderConfig:
    """The architecture ``deep_hinge`` trains: the ``encoder`` artifact's, or after an ``auto`` search
    the best candidate that is a network (``config``'s own when none is), with the squared-hinge objective."""
    record = encoder_record(encoder)
    stored = (record.network or {}) if record.searched else record.settings
    fields = {k: v for k, v in stored.items() if k in EncoderConfig.model_fields}
    return (EncoderConfig(**fields) if fields else config).model_copy(update={"objective": "squared_hinge"})


def trained_network(encoder: ArtifactRef) -> str | None:
    """The file of the trained network ``deep_hinge`` starts from, or None (train from scratch)."""
    record = encoder_record(encoder)
    if record.searched:
        return NETWORK if NETWORK in encoder.files else None
    return None if record.kind == "identity" else ENCODER_MODEL


@stage("deep_hinge")
def deep_hinge(scaled: ArtifactRef, encoder: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """The encoder's network with a one-vs-rest squared-hinge head, fine-tuned end to end (module docstring)."""
    cfg = network_config(encoder, config)
    X, y, val, meta = keras_rows(scaled, cfg)
    layout = Layout.from_meta(meta)
    n_classes = len(meta["classes"])
    start = trained_network(encoder)
    with OwnTime() as fit:  # not counting the wait for the Keras lock
        if start is None:
            model, history = train(X, y, *val, n_classes, cfg, layout, callbacks=(epoch_progress("deep_hinge"),))
        else:
            cfg = cfg.model_copy(update={"max_steps": max(int(cfg.max_steps * FINE_TUNE_SHARE), 1),
                                         "patience": min(cfg.patience, FINE_TUNE_PATIENCE)})
            model = with_hinge_head(load_encoder(encoder.file(start)), n_classes, cfg.seed)
            model, history = continue_training(model, X, y, *val, n_classes, cfg,
                                               callbacks=(epoch_progress("deep_hinge"),))
    budget = {**budget_used(X, cfg, history), "start": "scratch" if start is None else "trained network"}
    return write_model_artifact(root, "deep_hinge", {"scaled": scaled.sha256, "config": cfg.model_dump(),
                                                     "start": encoder.sha256 if start else None},
                                lambda w: save_keras(model, w.path(KERAS_MODEL)), keras_predictor(model), scaled,
                                fit.seconds, extra={HISTORY: history, BUDGET: budget},
                                inputs_seconds=total_seconds(encoder))  # its architecture (and start) came from it
