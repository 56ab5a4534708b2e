"""Stage train_encoder: the Keras encoder (MLP, 1-D or 2-D CNN, or identity) whose features feed the SVC.

With ``encoder.kind = "auto"`` it keeps one of the ``encoder_candidate`` artifacts it is given, or (images and
sequences) the ensemble of the networks (`selection`: from a default up, each challenger kept only when it beats the one
kept by more than a standard error); otherwise it trains the configured encoder on the training rows (early
stopping on val). A kept ensemble is written as one encoder (`tasks.core.networks.ensemble_encoder`).
After a search the best network's trained weights are kept too (``network.keras``), for ``deep_hinge``.

Output artifact ``encoder``: ``encoder.keras`` (the whole classifier; load with
``compile=False``), ``config.json`` (the encoder section it was trained with plus input width,
class count and layout, enough to rebuild it; after a search also ``selection``, every
candidate's score, and ``network``, the best candidate that is a network), ``history.json``,
``timing.json`` (``fit_seconds``: the training, after a search every candidate's training summed).
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from tasks._rows import keras_rows
from tasks.config import EncoderConfig
from tasks.core.candidates import (
    CHEAP_KINDS,
    ENSEMBLE,
    candidate_set,
    last_trained,
    networks_skipped,
    rung_fractions,
)
from tasks.core.layout import Layout
from tasks.core.margin import budget_used
from tasks.core.networks import best_epoch, encoder_config_json, save_keras, train
from tasks.errors import InputError
from tasks.obs.progress import OwnTime
from tasks.obs.runlog import epoch_progress, stage_logger
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.kinds import CONFIG, ENCODER_MODEL, HISTORY, NETWORK, SCALER, SCORE
from tasks.store.outputs import write_timing
from tasks.store.tables import read_meta


def best_network(rows: list[dict[str, Any]]) -> int | None:
    """Index of the best network among the candidates that ran: the one that went furthest in successive
    halving, then the best score (ties: the earlier); None when no network ran."""
    networks = [i for i, r in enumerate(rows) if r["score"] is not None and r["kind"] not in (*CHEAP_KINDS, ENSEMBLE)]
    return max(networks, key=lambda i: (rows[i]["reached"], rows[i]["score"], -i)) if networks else None


def selection(config: EncoderConfig, layout: Layout, scores: list[list[ArtifactRef | None]],
              n_train: int | None = None, ensemble: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per candidate of the search, in candidate order: name, kind, score (None when skipped),
    and for those that ran the validation used, epochs, seconds, ``rungs`` (its score at each rung of
    successive halving) and ``reached`` (the rung it reached, as the share of the step budget allotted
    there: below 1 when halving stopped it); ``chosen`` marks the one kept.

    Args:
        scores: per candidate, its ``candidate_score`` artifact of each rung (None where it did not run).

    ``ensemble``: the ensemble's ``score.json`` (`tasks.score_candidate`), when the search has one (images and
    sequences, two networks trained or more); its row comes last.

    The rule, from the default up: the networks' ensemble (their features side by side), ``rocket`` on
    sequences (MiniRocket is the strongest cheap method there), then ``identity``, then the best network
    (`best_network`); each is kept only when its advantage over the one kept
    so far, row by row on the same held-out rows, is more than one standard error of that advantage (the
    one-standard-error rule: on a few dozen validation rows, most differences between candidates are noise). Each challenger's row holds
    ``advantage``, ``standard_error`` and ``against``. A candidate that did not run (its budget spent) is
    passed over. A network not trained because the cheap candidates decided (`networks_skipped`, with
    ``n_train``) says why in ``skipped``.
    """
    rows, correct = [], {}
    for i, (spec, rungs) in enumerate(zip(candidate_set(layout, config), scores, strict=True)):
        row: dict[str, Any] = {"candidate": spec.name, "kind": spec.encoder.kind, "score": None, "chosen": False}
        stored = [None if r is None else read_json(r, SCORE) for r in rungs]
        if any(stored):
            last = max(r for r, score in enumerate(stored) if score is not None)
            score = stored[last]
            row.update({k: score[k] for k in ("score", "scores", "validation", "epochs", "train_seconds")})
            row["reached"] = rung_fractions(len(rungs))[last]
            row["rungs"] = [None if s is None else s["score"] for s in stored]
            correct[i] = np.asarray(score["correct"], dtype=np.float64)
        rows.append(row)
    if ensemble is not None:
        correct[len(rows)] = np.asarray(ensemble["correct"], dtype=np.float64)
        rows.append({"candidate": ENSEMBLE, "kind": ENSEMBLE, "chosen": False, "members": ensemble["members"],
                     **{k: ensemble[k] for k in ("score", "scores", "validation", "epochs", "train_seconds")}})
    if not correct:
        raise InputError("encoder.kind = 'auto': no candidate encoder finished; raise encoder.search_budget_s")
    network = best_network(rows)
    # the default, kept when the rows cannot tell: on sequences MiniRocket (the most accurate of the fast methods
    # over the UCR archive in its paper, and here on the public sets measured), else identity
    order = ("rocket", "identity") if any(r["kind"] == "rocket" for r in rows) else ("identity",)
    chain = [i for kind in order for i in correct if rows[i]["kind"] == kind]
    chain += [network] if network is not None else []
    if ensemble is not None:  # the networks together are the default (measured on digits and mnist1d: RESULTS.md)
        chain.insert(0, len(rows) - 1)
    best = chain[0]
    for challenger in chain[1:]:
        d = correct[challenger] - correct[best]
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        rows[challenger].update({"advantage": float(d.mean()), "standard_error": se, "against": rows[best]["candidate"]})
        if d.mean() > se:
            best = challenger
    rows[best]["chosen"] = True
    if n_train is not None and any(r["kind"] == "rocket" for r in rows):  # the search gated its networks
        cheap = [rows[i]["score"] for i in chain if rows[i]["kind"] in CHEAP_KINDS]
        reason = networks_skipped(cheap, n_train, config) if cheap else None
        for row in rows:
            if row["score"] is None and row["kind"] not in CHEAP_KINDS and reason is not None:
                row["skipped"] = reason
    return rows


def _write_ensemble(w: ArtifactWriter, trained: list[ArtifactRef], names: list[str], network: dict[str, Any],
                    seed: int) -> dict[str, Any]:
    """Write the ensemble of the ``trained`` candidates' encoders as ``encoder.keras``; its ``config.json`` (the
    best network's, ``network``, with the kind and the members)."""
    from tasks.core.networks import ensemble_encoder, load_encoder

    members = [load_encoder(ref.file(ENCODER_MODEL)) for ref in trained]
    model = ensemble_encoder(members, int(network["n_classes"]), seed)
    save_keras(model, w.path(ENCODER_MODEL))
    return {**network, "kind": ENSEMBLE, "resolved_kind": ENSEMBLE, "members": names,
            "n_features_out": int(model.get_layer("features").output.shape[-1])}


@stage("train_encoder")
def train_encoder(scaled: ArtifactRef, config: EncoderConfig, root: str,
                  candidates: list[list[ArtifactRef | None]] | None = None,
                  scores: list[list[ArtifactRef | None]] | None = None,
                  ensemble: ArtifactRef | None = None) -> ArtifactRef:
    """Keep the best candidate (``kind = "auto"``) or train the configured encoder; write the ``encoder`` artifact.

    ``candidates`` and ``scores``: per candidate, its ``encoder_candidate`` and ``candidate_score`` artifact of
    each rung of the search (None where it did not run); ``ensemble``: the ``candidate_score`` of the networks
    together (None when not scored).
    """
    log = stage_logger()
    params = {"scaled": scaled.sha256, "config": config.model_dump(),
              "candidates": [[None if c is None else c.sha256 for c in rungs] for rungs in scores or []],
              "ensemble": None if ensemble is None else ensemble.sha256}
    if config.kind == "auto":
        meta = read_meta(scaled)
        layout = Layout.from_meta(meta)
        if candidates is None or scores is None:
            raise ValueError("train_encoder with encoder.kind = 'auto' needs the encoder_candidate artifacts")
        together = None if ensemble is None else read_json(ensemble, SCORE)
        names = [c.name for c in candidate_set(layout, config)]
        members = [] if together is None else [names.index(name) for name in together["members"]]
        if together is not None and [last_trained(candidates[i]).sha256 for i in members] != together["member_artifacts"]:
            raise ValueError("the ensemble's score was made from other trainings than the candidates given")
        rows = selection(config, layout, scores, int(meta["split_sizes"]["train"]), together)
        chosen = next(i for i, r in enumerate(rows) if r["chosen"])
        network = best_network(rows)  # where deep_hinge starts
        skipped = [r["candidate"] for r in rows if r["score"] is None]
        log.info("train_encoder: layout %s %s (%s); kept candidate %s (validation accuracy %.4f) of %s%s",
                 layout.kind, layout.shape, layout.reason, rows[chosen]["candidate"], rows[chosen]["score"],
                 ", ".join(f"{r['candidate']} {r['score']:.4f}" for r in rows if r["score"] is not None),
                 f"; not started (budget spent): {', '.join(skipped)}" if skipped else "")
        with ArtifactWriter(root, "encoder", params) as w:
            if rows[chosen]["kind"] == ENSEMBLE:
                winner = last_trained(candidates[network])  # its history and settings stand for the ensemble's
                chosen_config = _write_ensemble(w, [last_trained(candidates[i]) for i in members], rows[chosen]["members"],
                                                read_json(winner, CONFIG), config.seed)
            else:
                winner = last_trained(candidates[chosen])
                shutil.copyfile(winner.file(ENCODER_MODEL), w.path(ENCODER_MODEL))
                chosen_config = read_json(winner, CONFIG)
            best = None if network is None else last_trained(candidates[network])
            if best is not None:
                shutil.copyfile(best.file(ENCODER_MODEL), w.path(NETWORK))
            w.write_json(CONFIG, {
                **chosen_config, "selection": rows,
                "network": None if best is None else read_json(best, CONFIG)})
            w.write_json(HISTORY, read_json(winner, HISTORY))
            write_timing(w, sum(r.get("train_seconds") or 0.0 for r in rows))  # the search's training, all of it
        return w.ref
    X_train, y_train, val, meta = keras_rows(scaled, config)
    n_classes = len(meta["classes"])
    layout = Layout.from_meta(meta)
    with OwnTime() as took:  # not counting the wait for the Keras lock
        model, history = train(X_train, y_train, *val, n_classes, config, layout,
                               callbacks=(epoch_progress("train_encoder"),), scaler=read_json(scaled, SCALER))
    budget = budget_used(X_train, config, history)
    best = best_epoch(history)
    if history:
        log.info("train_encoder stopped after %d epochs (%d steps; %s); best epoch %d (val_accuracy=%.4f)",
                 len(history["loss"]), budget["steps"], budget["how"], best + 1,
                 history.get("val_accuracy", [float("nan")] * len(history["loss"]))[best])
    with ArtifactWriter(root, "encoder", params) as w:
        save_keras(model, w.path(ENCODER_MODEL))
        w.write_json(CONFIG, {**encoder_config_json(config, layout, val[0].shape[1], n_classes, best + 1),
                                     "budget": budget})
        w.write_json(HISTORY, history)
        write_timing(w, took.seconds)
    return w.ref
