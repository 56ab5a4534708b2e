"""The human report: markdown, a self-contained HTML page, and the charts (matplotlib, imported inside)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from tasks.catalog import MAIN_APPROACH
from tasks.core.candidates import rung_fractions


def render_header(rows: list[tuple[str, str]]) -> str:
    """The run's facts (version, date, run, config changes) as a two-column markdown table."""
    lines = ["| run | |", "|:---|:---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _encoder_section(encoder: dict[str, Any] | None, fmt: str) -> list[str]:
    """``## Encoder``: the rows' layout and why, the encoder kept, and after a search every candidate."""
    if not encoder:
        return []
    layout = encoder["layout"]
    lines = ["## Encoder", "", f"Rows read as {'an' if layout['kind'] == 'image' else 'a'} **{layout['kind']}** of shape "
                      f"{layout['shape']}: {layout['reason']}.", ""]
    budget = encoder.get("budget")
    if budget and budget.get("steps"):
        lines += [f"Training length of the encoder kept: {budget['steps']} of at most {budget['max_steps']} steps "
                  f"(`encoder.max_steps`); {budget['how']}.", ""]
    rows = encoder.get("selection")
    if not rows:
        return lines + [f"Encoder: {encoder['kind']}, as configured.", ""]
    chosen = next(r for r in rows if r["chosen"])
    tried = [r for r in rows if "advantage" in r]
    rule = "" if not tried else (
        " From the default up (the networks' ensemble, rocket on sequences, identity, then the best "
        "network), each is kept only when it "
        "beats the one kept so far by more than one standard error on the same rows: here "
        + "; ".join(f"{r['candidate']} against {r.get('against', 'identity')} {100 * r['advantage']:+.2f} ± "
                    f"{100 * r['standard_error']:.2f} points" for r in tried) + ".")
    skipped = next((r["skipped"] for r in rows if r.get("skipped")), None)
    if skipped:
        rule += f" The networks were not trained: {skipped}."
    rungs = max((len(r.get("rungs") or []) for r in rows), default=1)
    halving = "" if rungs < 2 else (
        f" Successive halving: the networks trained {', then '.join(f'{100 * f:.0f} %' for f in rung_fractions(rungs))}"
        " of their step budget, the better half going on each time; the score at each rung is shown.")
    lines += [f"Encoder kept: **{chosen['candidate']}**, chosen by the validation accuracy of features + SVC "
              f"({chosen['validation']}; test rows not used).{rule}{halving}", "",
              "| candidate | kind | validation accuracy | " + ("by rung | " if rungs > 1 else "")
              + "epochs | seconds | kept |", "|:---|:---|---:|" + (":---|" if rungs > 1 else "") + "---:|---:|:---|"]
    for r in rows:
        by_rung = ""
        if rungs > 1:
            by_rung = " → ".join(fmt.format(v) for v in r.get("rungs") or [] if v is not None) + " | "
        if r["score"] is None:
            why = "not trained (the cheap candidates decided)" if r.get("skipped") else "not started (budget spent)"
            lines.append(f"| {r['candidate']} | {r['kind']} | {why} | " + ("| " if rungs > 1 else "") + "| | |")
        else:
            name = r["candidate"] + (f" ({' + '.join(r['members'])})" if r.get("members") else "")
            epochs = "" if r["epochs"] is None else r["epochs"]
            lines.append(f"| {name} | {r['kind']} | {fmt.format(r['score'])} | {by_rung}{epochs} | "
                         f"{r['train_seconds']:.1f} | {'yes' if r['chosen'] else ''} |")
    return [*lines, ""]


def solver_detail(s: dict[str, Any]) -> str:
    """What a ``solver.json`` record says ran: the solver's make-up and its fit time."""
    if s["solver"] == "approx":
        if "lambda" in s:
            detail = (f"{s['components']} Nystroem centres, closed-form fit (squared loss, one-vs-rest), "
                      f"lambda {s['lambda']:.3g}" + (" chosen on validation rows" if s.get("sweep") else ""))
        else:  # written before the closed-form solver
            detail = f"Nystroem map with {s['components']} components, {s.get('epochs')} passes of a minibatch linear SVM"
    else:
        detail = "scikit-learn SVC, exact" + (f", {s['support_vectors']} support vectors" if "support_vectors" in s else "")
    if "fit_seconds" in s:
        detail += f"; fit {s['fit_seconds']:.1f} s"
    if s.get("predicted_seconds") is not None:
        detail += f" (the exact fit predicted {s['predicted_seconds']:.1f} s)"
    return detail


def _solver_section(approaches: dict[str, Any], skipped: dict[str, str]) -> list[str]:
    """``## Solvers and budgets``: which SVM solver each SVC approach ran and why, the step budget of each
    Keras training, and the approaches that were skipped at this size."""
    lines = []
    for name, a in approaches.items():
        s = a.get("solver")
        if s:
            lines.append(f"| {name} | {s['solver']} | {s['reason']}; {solver_detail(s)} |")
        b = a.get("budget")
        if b:
            lines.append(f"| {name} | {b['steps']} of at most {b['max_steps']} steps | {b['how']} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped | {why} |")
    if not lines:
        return []
    return ["## Solvers and budgets", "", "| approach | ran | why |", "|:---|:---|:---|", *lines, ""]


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def ranking_sentences(metrics: dict[str, Any]) -> list[str]:
    """Which approach won, how sure, and what was bundled and why: plain sentences from ``metrics["ranking"]``
    (`tasks.core.metrics.ranking`)."""
    rows = metrics["ranking"]
    n, main = metrics["n_test"], metrics.get("main", MAIN_APPROACH)
    best = rows[0]
    tied = [r["approach"] for r in rows[1:] if r["within_noise"]]
    behind = [r for r in rows[1:] if not r["within_noise"]]
    out = [f"Best on these {n} test rows: **{best['approach']}**, {_points(best['accuracy'])} % "
           f"(95 % interval {_points(best['low'])}–{_points(best['high'])})."]
    if tied:
        out.append(f"Within noise of it (a paired difference on the same rows under 1.96 standard errors, so these "
                   f"rows cannot tell them apart): {', '.join(f'**{t}**' for t in tied)}.")
    if behind:
        out.append("Behind it beyond noise: " + ", ".join(
            f"{r['approach']} ({0.0 - 100 * r['difference']:+.1f} ± {100 * 1.96 * r['difference_se']:.1f} points)"
            for r in behind) + ".")
    bundled = next((r for r in rows if r["approach"] == main), None)
    if bundled is not None:
        standing = ("it is the best here" if bundled["rank"] == 1 else
                    "it is within noise of the best" if bundled["within_noise"] else
                    f"here it ranks {bundled['rank']} of {len(rows)}, behind the best beyond noise: another approach "
                    "may suit this data better (the report compares them; the bundle does not switch)")
        out.append(f"Bundled and registered: **{main}** (encoder + SVC, the model `predict` serves), the main path by "
                   f"design: the bundle always holds it, whichever approach ranks first; {standing}.")
    return out


def _ranking_section(metrics: dict[str, Any], fmt: str) -> list[str]:
    """``## Which approach``: the approaches ranked by test accuracy with 95 % intervals and the difference from
    the best, the sentences of `ranking_sentences`, and each approach's seconds with what it needed."""
    approaches = metrics["approaches"]
    rows = metrics.get("ranking")
    if not rows:  # a report written before rankings: the approaches in catalog order
        rows = [{"rank": "", "approach": n, "accuracy": a["accuracy"]} for n, a in approaches.items()]
    lines = ["## Which approach", ""]
    if "low" in rows[0]:
        lines += [" ".join(ranking_sentences(metrics)), ""]
    lines += ["| rank | approach | test accuracy | 95 % interval | vs best (points) | macro-F1 | fit s | "
              "fit s with inputs | predict s | what it optimises |",
              "|---:|:---|---:|:---|---:|---:|---:|---:|---:|:---|"]
    for r in rows:
        a = approaches[r["approach"]]
        interval = f"{fmt.format(r['low'])} – {fmt.format(r['high'])}" if "low" in r else ""
        versus = "" if "difference" not in r else "best" if r["rank"] == 1 else (
            f"{0.0 - 100 * r['difference']:+.1f} ± {100 * 1.96 * r['difference_se']:.1f}"
            + (" (noise)" if r["within_noise"] else ""))
        total = a["fit_seconds"] + a.get("inputs_seconds", 0.0)
        lines.append(f"| {r['rank']} | {r['approach']} | {fmt.format(a['accuracy'])} | {interval} | {versus} | "
                     f"{fmt.format(a['macro_f1'])} | {a['fit_seconds']:.2f} | {total:.2f} | "
                     f"{a['predict_seconds']:.3f} | {a['objective']} |")
    needs = {MAIN_APPROACH: "the encoder's training (every candidate's, after a search) and the feature extraction",
             "deep_hinge": "the encoder search whose network it starts from"}
    shared = [f"{n}: {needs.get(n, 'the artifacts it reads')}" for n, a in approaches.items() if a.get("inputs_seconds")]
    lines += ["", "Intervals: Wilson score intervals of each accuracy; vs best: the paired difference on the same test "
                  "rows ± 1.96 standard errors; ties rank in catalog order. Fit s with inputs: the approach's own fit "
                  "plus the work it needed beyond the scaled rows"
              + (f" ({'; '.join(shared)}; the run paid the encoder once)" if shared else "") + ".", ""]
    return lines


def render_markdown(metrics: dict[str, Any], source: str, digits: int, header: str = "") -> str:
    """The human report: ``header`` (see `render_header`), comparison, headline scores, per-class
    table, confusion matrix. Text columns are left-aligned, numbers right-aligned."""
    fmt = f"{{:.{digits}f}}"
    lines = [f"# marginflow report: {source}", ""]
    if header:
        lines += [header.rstrip("\n"), ""]
    lines += [f"Scored on {metrics['n_test']} held-out test rows.", ""]
    approaches = metrics.get("approaches") or {}
    if approaches:
        lines += _ranking_section(metrics, fmt)
    lines += _encoder_section(metrics.get("encoder"), fmt)
    lines += _solver_section(approaches, metrics.get("skipped") or {})
    searched = {n: a["search"] for n, a in approaches.items() if a.get("search")}
    if searched:
        lines += ["## SVC search (stratified k-fold CV on the training rows)", "",
                  "| approach | C | gamma | gamma factor | CV score |", "|:---|---:|---:|---:|---:|"]
        for name, c in searched.items():
            lines.append(f"| {name} | {c['C']:g} | {c['gamma']:.4g} | {c['gamma_factor']:g} | {fmt.format(c['mean'])} |")
        lines.append("")
    lines += [
        f"## Main path: {metrics.get('main', MAIN_APPROACH)}", "",
        "| metric | value |",
        "|:---|---:|",
        f"| test accuracy | {fmt.format(metrics['accuracy'])} |",
        f"| test macro-F1 | {fmt.format(metrics['macro_f1'])} |",
        f"| validation accuracy | {fmt.format(metrics['val_accuracy'])} |",
        f"| test rows | {metrics['n_test']} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|:---|---:|---:|---:|---:|",
    ]
    for row in metrics["per_class"]:
        lines.append(
            f"| {row['class']} | {fmt.format(row['precision'])} | {fmt.format(row['recall'])} "
            f"| {fmt.format(row['f1'])} | {row['support']} |"
        )
    names = [str(c) for c in metrics["classes"]]
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ pred | " + " | ".join(names) + " |", "|:---" + "|---:" * len(names) + "|"]
    for name, row in zip(names, metrics["confusion"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _figure(**kwargs):
    """A matplotlib ``Figure`` drawn by the Agg canvas: the object API, no pyplot and no global backend
    switch, so plots from several threads never race on pyplot's module state."""
    from tasks.obs.progress import import_once

    figure, agg = import_once("matplotlib.figure", "matplotlib.backends.backend_agg")
    fig = figure.Figure(**kwargs)
    agg.FigureCanvasAgg(fig)
    return fig


def plot_approaches(metrics: dict[str, Any], path) -> None:
    """Horizontal bar chart of test accuracy per approach, with its 95 % interval when the report ranks them."""
    names = list(metrics["approaches"])
    acc = [metrics["approaches"][n]["accuracy"] for n in names]
    fig = _figure(figsize=(7, 0.5 * len(names) + 1.2), dpi=100)
    ax = fig.subplots()
    interval = {r["approach"]: (r["low"], r["high"]) for r in metrics.get("ranking") or [] if "low" in r}
    xerr = None
    if set(interval) == set(names):
        xerr = np.array([[a - interval[n][0] for n, a in zip(names, acc, strict=True)],
                         [interval[n][1] - a for n, a in zip(names, acc, strict=True)]]).clip(min=0.0)
    bars = ax.barh(names, acc, color=["#1f77b4" if n == metrics["main"] else "#9ab" for n in names], xerr=xerr,
                   error_kw={"ecolor": "#444", "capsize": 3, "linewidth": 1})
    for bar, n, a in zip(bars, names, acc, strict=True):  # right of the interval, when there is one
        ax.text(interval[n][1] + 0.01 if xerr is not None else a + 0.01, bar.get_y() + bar.get_height() / 2,
                f"{a:.4f}", va="center", fontsize=9)
    ax.set_xlim(0.0, 1.15)  # from zero: bar lengths are proportional to accuracy
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.set_title(f"{Path(str(metrics['source'])).name}: approaches on {metrics['n_test']} test rows"
                 + (" (95 % intervals)" if xerr is not None else ""))
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def plot_confusions(approaches: dict[str, dict[str, Any]], classes: list[Any], path) -> None:
    """Every approach's test confusion matrix in one grid: colour is the share of each true class (rows
    normalised, so small classes read as well as large ones), the number is the count of rows; zeros are
    left blank, so the few mistakes stand out."""
    names = list(approaches)
    k = len(classes)
    cols = min(3, len(names))
    grid = -(-len(names) // cols)
    cell = min(max(2.6, 0.32 * k + 1.2), 6.0)
    fig = _figure(figsize=(cell * cols + 0.8, cell * grid + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(grid, cols, squeeze=False)
    labels = [str(c)[:10] for c in classes]
    font = 9 if k <= 6 else 7 if k <= 12 else 5.5
    image = None
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        cm = np.asarray(approaches[name]["confusion"])
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                                color="white" if share[i, j] > 0.55 else "#b00" if i != j else "black",
                                fontweight="bold" if i != j else "normal")
        ticks = range(k) if k <= 20 else range(0, k, max(k // 10, 1))
        turn = 90 if k > 6 else 35 if max(map(len, labels)) > 4 else 0
        ax.set_xticks(list(ticks), [labels[t] for t in ticks], rotation=turn, ha="right" if turn == 35 else "center",
                      fontsize=font)
        ax.set_yticks(list(ticks), [labels[t] for t in ticks], fontsize=font)
        ax.set_title(f"{name} ({approaches[name]['accuracy']:.4f})", fontsize=10)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of the true class")
    fig.savefig(path, metadata={"Software": None})


def plot_history(history: dict[str, list[float]], path, name: str = "encoder", restores_best: bool = True) -> None:
    """One Keras model's loss (and accuracy) per epoch, train and validation; for a model trained with
    early stopping (``restores_best``), a dashed line marks the epoch whose weights it kept (lowest
    validation loss). The others keep their last epoch's weights, which no line marks."""
    panels = [m for m in ("loss", "accuracy") if m in history]
    best = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") and restores_best else None
    fig = _figure(figsize=(5 * len(panels), 3.5), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        epochs = range(1, len(history[m]) + 1)
        ax.plot(epochs, history[m], label="train")
        if f"val_{m}" in history:
            ax.plot(epochs, history[f"val_{m}"], label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_title(f"{name}: {m}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


REPORT_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;"
    "line-height:1.45}"
    "table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top;white-space:nowrap}th{background:#f3f3f3}"
    "td:last-child{min-width:14em;white-space:normal}code{background:#f4f4f4;padding:0 3px;border-radius:3px}"
    "img{max-width:100%;height:auto}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
    "@media (max-width:600px){body{margin:.5em auto;font-size:15px}td,th{padding:2px 4px}}"
)


def render_html(markdown: str, images: dict[str, bytes]) -> str:
    """A self-contained HTML page of the report's markdown (rendered by markdown-it-py: CommonMark with
    tables), each ``![alt](name.png)`` of ``images`` inlined as a data URI; readable at phone width
    (wide tables scroll sideways, images shrink)."""
    import html

    from markdown_it import MarkdownIt

    # rendered with the file names, the data URIs put in after: markdown-it scans and normalises a link
    # character by character (digits' report, 6 charts, 225 KiB of PNG: 74 ms with the URIs inside, 6 ms after)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    for name, data in images.items():
        body = body.replace(f'src="{name}"', f'src="{_data_uri(data)}"')
    title = html.escape(markdown.splitlines()[0].lstrip("# "))
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
            f"<style>{REPORT_STYLE}</style></head><body>\n{body}</body></html>\n")


def render_report(metrics: dict[str, Any], digits: int, charts: list[tuple[str, str]], header: str = "") -> str:
    """The whole report.md: `render_markdown` of ``metrics`` (with ``header``), then `charts_markdown`."""
    return render_markdown(metrics, str(metrics["source"]), digits, header) + "\n" + charts_markdown(charts)


def charts_markdown(charts: list[tuple[str, str]]) -> str:
    """A ``## Charts`` section: for each ``(title, file name)``, a heading and the image."""
    if not charts:
        return ""
    lines = ["## Charts", ""]
    for title, name in charts:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def inline_images(markdown: str, images: dict[str, bytes]) -> str:
    """``markdown`` with each ``![alt](name.png)`` of ``images`` as a data URI (for the dashboard,
    whose markdown renderer shows such images; it has no access to the report's folder)."""
    for name, data in images.items():
        markdown = markdown.replace(f"]({name})", f"]({_data_uri(data)})")
    return markdown


def _data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def render_stages(stages: dict[str, dict[str, Any]], engine: str) -> str:
    """Markdown table of one run's stages: status, own seconds, seconds waited for the Keras lock,
    and where each ran (host and pid)."""
    lines = [f"# marginflow run: stages (engine: {engine})", "", "| stage | status | seconds | waited s | where |",
             "|:---|:---|---:|---:|:---|"]
    for name, s in stages.items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.2f} | {s.get('waited', 0.0):.2f} | {s['where']} |")
    return "\n".join(lines) + "\n"
