"""The encoder candidates of ``encoder.kind = "auto"``, and how one is scored on validation rows.

Each layout has a small fixed set; none was chosen by looking at one dataset's test rows.
Every set ends with ``identity`` (the scaled inputs are the features), so the chosen
encoder's features are never worse for the SVC on validation than the raw inputs are.

Image ``[H, W, C]``, shift ``s = max(1, round(min(H, W) / 8))`` pixels:

* ``cnn2d-shift``: conv 32, 64 (3x3, 2x2 max-pool each), flatten, dense 256, 128, dropout 0.3, random shifts of up to ``s``;
* ``cnn2d-deep-shift``: conv 32, 64, 128, otherwise the same;
* ``cnn2d``: conv 32, 64 without shifts;

Sequence ``[T, C]``, shift ``s = max(1, round(0.15 T))`` steps:

* ``cnn1d-wide-shift``: conv 64, 128, 128 (kernel 7), flatten (global max pooling beyond 512 steps, to
  keep the dense layer small), dense 512, 128, dropout 0.3, shifts of up to ``s``;
* ``cnn1d-norm-gap``: conv 64, 128, 128 (kernel 9) with batch normalisation, global average pooling, dense 128;
* ``cnn1d-norm-gap-shift``: the same with kernel 5 and shifts of up to ``s``;
* ``rocket``: MiniRocket's random convolutions (`tasks.core.rocket`), fitted in seconds, trained by nothing;

Table ``[d]``: ``mlp`` (dense 256, 128, dropout 0.1) and ``mlp-narrow`` (dense 64, 32, dropout 0.3).

Cheap candidates first (`CHEAP_KINDS`: identity, and rocket for sequences): they are scored before any
network trains, and the networks train only when they could still win (`networks_skipped`).

Images and sequences, ``encoder.search_ensemble``: the networks' features concatenated (`ENSEMBLE`, at the rung
each reached) are scored too, from what the networks stored; no training of its own.

Training length: candidates with shifts train up to 150 epochs (patience 25, batch 32: each
epoch sees newly shifted rows), the others up to 60 (patience 10, batch 32 or 64); none more
than ``encoder.max_steps`` steps (`tasks.core.margin.step_budget`). The
learning rate, activation, objective and seed are the ``encoder`` section's.

How a candidate is scored: `tasks.core.search`.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from tasks.config import EncoderConfig
from tasks.core.layout import Layout

# kinds fitted without gradient training (seconds): the simplest candidates, against which a network must win
CHEAP_KINDS = ("identity", "rocket")
# images: the features of every network the search trained, side by side (``encoder.search_ensemble``); not a
# candidate of its own (nothing trains for it), scored from the networks' stored held-out features
ENSEMBLE = "ensemble"
T = TypeVar("T")
_LONG = {"epochs": 150, "patience": 25, "batch_size": 32}
_SHORT = {"epochs": 60, "patience": 10, "batch_size": 32}


class Candidate(BaseModel):
    """One candidate: a name and the whole encoder section it trains with."""

    model_config = ConfigDict(frozen=True)

    name: str
    encoder: EncoderConfig


def candidate_set(layout: Layout, base: EncoderConfig) -> list[Candidate]:
    """The candidates for ``layout`` (module docstring), built on ``base``'s learning rate, activation,
    objective and seed, its fold settings and its step budget and validation rows (not its time budget:
    a candidate's result does not depend on it);
    ``identity`` last."""
    keep = {"learning_rate": base.learning_rate, "activation": base.activation, "objective": base.objective,
            "seed": base.seed, "search_folds": base.search_folds,
            "search_repeats": base.search_repeats, "search_folds_below": base.search_folds_below,
            "max_steps": base.max_steps, "val_rows": base.val_rows}
    if layout.kind == "image":
        s = max(1, round(min(layout.shape[:2]) / 8))
        conv = {"kind": "cnn2d", "kernel_size": 3, "pooling": "flatten", "hidden": [256, 128], "dropout": 0.3}
        rows = [("cnn2d-shift", {**conv, "filters": [32, 64], "augment_shift": s, **_LONG}),
                ("cnn2d-deep-shift", {**conv, "filters": [32, 64, 128], "augment_shift": s, **_LONG}),
                ("cnn2d", {**conv, "filters": [32, 64], **_SHORT})]
    elif layout.kind == "sequence":
        s = max(1, round(0.15 * layout.shape[0]))
        gap = {"kind": "cnn1d", "filters": [64, 128, 128], "pooling": "global_avg", "batch_norm": True,
               "hidden": [128], "dropout": 0.1}
        flat = "flatten" if layout.shape[0] // 8 * 128 <= 8192 else "global_max"  # <= 8192 values into the dense
        rows = [("cnn1d-wide-shift", {"kind": "cnn1d", "filters": [64, 128, 128], "kernel_size": 7, "pooling": flat,
                                      "hidden": [512, 128], "dropout": 0.3, "augment_shift": s, **_LONG}),
                ("cnn1d-norm-gap", {**gap, "kernel_size": 9, **_SHORT}),
                ("cnn1d-norm-gap-shift", {**gap, "kernel_size": 5, "augment_shift": s, **_LONG}),
                ("rocket", {"kind": "rocket", "rocket_features": base.rocket_features})]
    else:
        rows = [("mlp", {"kind": "mlp", "hidden": [256, 128], "dropout": 0.1, **_SHORT, "batch_size": 64}),
                ("mlp-narrow", {"kind": "mlp", "hidden": [64, 32], "dropout": 0.3, **_SHORT})]
    rows.append(("identity", {"kind": "identity"}))
    return [Candidate(name=name, encoder=EncoderConfig(**{**keep, **values})) for name, values in rows]


def ensemble_scored(layout: Layout, config: EncoderConfig, streamed: bool) -> bool:
    """Whether the search scores the ensemble of its networks (`ENSEMBLE`): on images and sequences (measured on
    digits and mnist1d; not on tables) with ``encoder.search_ensemble``, when the training rows are held in
    memory (not ``streamed``: extracting an ensemble's features costs its members' together, and that was not
    measured past ``data.batch_rows``). It needs two networks trained (few rows: none are)."""
    return config.search_ensemble and layout.kind in ("image", "sequence") and not streamed


def last_trained(rungs: list[T | None]) -> T | None:
    """A candidate's last training among its rungs (None where a rung did not run), or None when none ran."""
    return next((r for r in reversed(rungs) if r is not None), None)


def rung_fractions(n_rungs: int) -> list[float]:
    """The share of the step budget a candidate has trained at the end of each of ``n_rungs`` rungs of the
    search (`tasks.core.search`): the budgets double up to the whole one (3 -> [1/4, 1/2, 1])."""
    return [2.0 ** (r - n_rungs + 1) for r in range(n_rungs)]


def networks_skipped(cheap_scores: list[float | None], n_train: int, config: EncoderConfig) -> str | None:
    """Why the search trains no network after its cheap candidates (identity, rocket) scored ``cheap_scores``
    on ``n_train`` training rows, or None when the networks train.

    A network is kept only when it beats the cheap candidate kept by more than a standard error on the same
    rows (`tasks.train_encoder.selection`): none can beat a perfect score. And below
    ``encoder.search_networks_from`` training rows they are not trained at all: on the public sequence sets
    measured (28 to 50 training rows) no network beat MiniRocket (benchmarks/RESULTS.md).
    """
    if n_train < config.search_networks_from:
        return (f"{n_train} training rows < encoder.search_networks_from = {config.search_networks_from}: "
                "the cheap candidates decide")
    done = [s for s in cheap_scores if s is not None]
    if done and max(done) >= 1.0:
        return "a cheap candidate scored 100 % on validation: no network can beat it by the rule"
    return None
