"""Image encoders on digits: which changes to the search's networks help ``features_svc``.

For each seed, the digits split of a default run (``data``/``encoder`` seeds set to it), then each
variant trained in full (train rows, early stopping on val, the candidate's own step budget) and an
SVC (rbf, C 10, gamma "scale", the selection's) fitted on its training features; validation and
test accuracy. Variants are the search's image candidates (`tasks.core.candidates`), optionally
with ``+rot<degrees>`` and ``+sc<fraction>`` (random rotations and scalings while training:
``encoder.augment_rotate``, ``augment_scale``) and ``+seed<k>`` (the same network from another
seed). Ensembles: members' features concatenated into one SVC (``cat``, what
``encoder.search_ensemble`` builds), or their SVCs' decision values averaged (``avg``).

Run: ``.venv/bin/python benchmarks/image_encoders.py [--seeds 5] [--variants a,b+rot10+sc0.1]
[--groups a|b,a|b|c]``. About 10 s per variant and seed on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_VARIANTS = "cnn2d-shift,cnn2d-deep-shift,cnn2d,cnn2d-shift+rot10+sc0.1,cnn2d-shift+seed1,cnn2d-shift+seed2"
DEFAULT_GROUPS = "cnn2d-shift|cnn2d-deep-shift|cnn2d,cnn2d-shift|cnn2d-shift+seed1|cnn2d-shift+seed2"


def variant_config(base, name: str):
    """The encoder section of ``name``: a candidate, then its ``+rot``/``+sc``/``+seed`` changes."""
    candidate, *changes = name.split("+")
    config = base[candidate]
    for change in changes:
        if change.startswith("rot"):
            config = config.model_copy(update={"augment_rotate": float(change[3:])})
        elif change.startswith("sc"):
            config = config.model_copy(update={"augment_scale": float(change[2:])})
        elif change.startswith("seed"):
            config = config.model_copy(update={"seed": config.seed + int(change[4:])})
        else:
            raise SystemExit(f"--variants: unknown change {change!r} in {name!r}")
    return config


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import SEED_KEYS

    from flows.pipeline import pipeline
    from tasks.config import SVCConfig
    from tasks.config_text import load_config
    from tasks.core.candidates import candidate_set
    from tasks.core.layout import Layout
    from tasks.core.networks import cut_at_features, embed, train
    from tasks.core.svm import fit_svc
    from tasks.store.tables import load_split, read_meta

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated (module docstring)")
    parser.add_argument("--groups", default=DEFAULT_GROUPS, help="comma-separated ensembles of variants joined by |")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test suite runs "
                        "(benchmarks/smoke.py); its numbers mean nothing")
    args = parser.parse_args()
    extra = []
    if args.smoke:
        args.seeds, args.variants, args.groups = 1, "cnn2d,cnn2d+seed1", "cnn2d|cnn2d+seed1"
        extra = ["encoder.max_steps=20"]
    variants = args.variants.split(",")
    groups = [g.split("|") for g in args.groups.split(",") if g]
    unknown = {m for g in groups for m in g} - set(variants)
    if unknown:
        raise SystemExit(f"--groups: {', '.join(sorted(unknown))} not in --variants")
    root = Path(tempfile.mkdtemp(prefix="image-encoders-"))
    svc = SVCConfig(kernel="rbf")
    results: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        config = load_config(None, [*(f"{k}={seed}" for k in SEED_KEYS), *extra], {"data.dataset": "digits"})
        scaled = pipeline(config=config, data_dir=str(root / f"digits-{seed}"), until="scale").artifacts["scale"]
        meta = read_meta(scaled)
        layout = Layout.from_meta(meta)
        (X, y), (Xv, yv), (Xt, yt) = (load_split(scaled, s) for s in ("train", "val", "test"))
        base = {c.name: c.encoder for c in candidate_set(layout, config.encoder)}
        model = fit_svc(X, y, svc)
        results.setdefault("identity", []).append((model.score(Xv, yv), model.score(Xt, yt)))
        features, decisions = {}, {}
        for name in variants:
            start = time.perf_counter()
            network, _ = train(X, y, Xv, yv, len(meta["classes"]), variant_config(base, name), layout)
            cut = cut_at_features(network)
            features[name] = [embed(cut, A, 1024) for A in (X, Xv, Xt)]
            model = fit_svc(features[name][0], y, svc)
            decisions[name] = [model.decision_function(features[name][i]) for i in (1, 2)]
            results.setdefault(name, []).append((model.score(features[name][1], yv), model.score(features[name][2], yt)))
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            print(f"seed {seed} {name}: val {100 * results[name][-1][0]:.2f} test {100 * results[name][-1][1]:.2f}",
                  flush=True)
        for group in groups:
            joined = [np.concatenate([features[m][i] for m in group], axis=1) for i in range(3)]
            model = fit_svc(joined[0], y, svc)
            results.setdefault("cat " + " & ".join(group), []).append((model.score(joined[1], yv),
                                                                        model.score(joined[2], yt)))
            averaged = [np.mean([decisions[m][i] for m in group], axis=0).argmax(axis=1) for i in (0, 1)]
            results.setdefault("avg " + " & ".join(group), []).append((float(np.mean(averaged[0] == yv)),
                                                                        float(np.mean(averaged[1] == yt))))
    width = max(len(k) for k in results) + 2
    print(f"\ndigits, features + SVC accuracy (%), mean ± sd over seeds 0-{args.seeds - 1}\n")
    print(f"{'encoder':<{width}}{'validation':>16}{'test':>16}{'train s':>9}")
    for name, rows in results.items():
        cells = ""
        for i in (0, 1):
            values = [100 * r[i] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells += f"{f'{statistics.fmean(values):.2f} ± {sd:.2f}':>16}"
        took = f"{statistics.fmean(seconds[name]):>9.1f}" if name in seconds else f"{'':>9}"
        print(f"{name:<{width}}{cells}{took}")


if __name__ == "__main__":
    main()
