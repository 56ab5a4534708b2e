"""The human report: markdown, a self-contained HTML page, and the charts (matplotlib, imported inside)."""

from __future__ import annotations

import base64
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
    best = next((r for r in rows if "advantage" in r), None)
    rule = "" if best is None else (
        f" The best network, {best['candidate']}, is kept only when it beats identity by more than one standard "
        f"error on the same rows: here by {100 * best['advantage']:+.2f} ± {100 * best['standard_error']:.2f} points.")
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
            lines.append(f"| {r['candidate']} | {r['kind']} | not started (budget spent) | " + ("| " if rungs > 1 else "")
                         + "| | |")
        else:
            lines.append(f"| {r['candidate']} | {r['kind']} | {fmt.format(r['score'])} | {by_rung}{r['epochs']} | "
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
        lines += ["## Approaches", "", "| approach | accuracy | macro-F1 | fit s | predict s | what it optimises |",
                  "|:---|---:|---:|---:|---:|:---|"]
        for name, a in approaches.items():
            lines.append(f"| {name} | {fmt.format(a['accuracy'])} | {fmt.format(a['macro_f1'])} | "
                         f"{a['fit_seconds']:.2f} | {a['predict_seconds']:.3f} | {a['objective']} |")
        lines.append("")
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
    from tasks.store.progress import import_once

    figure, agg = import_once("matplotlib.figure", "matplotlib.backends.backend_agg")
    fig = figure.Figure(**kwargs)
    agg.FigureCanvasAgg(fig)
    return fig


def plot_approaches(metrics: dict[str, Any], path) -> None:
    """Horizontal bar chart of test accuracy per approach."""
    names = list(metrics["approaches"])
    acc = [metrics["approaches"][n]["accuracy"] for n in names]
    fig = _figure(figsize=(7, 0.5 * len(names) + 1.2), dpi=100)
    ax = fig.subplots()
    bars = ax.barh(names, acc, color=["#1f77b4" if n == metrics["main"] else "#9ab" for n in names])
    ax.bar_label(bars, labels=[f"{a:.4f}" for a in acc], padding=3)
    ax.set_xlim(0.0, 1.15)  # from zero: bar lengths are proportional to accuracy
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.set_title(f"{metrics['source']}: approaches on {metrics['n_test']} test rows")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def plot_confusion(confusion: list[list[int]], classes: list[Any], title: str, path) -> None:
    cm = np.asarray(confusion)
    k = len(classes)
    size = min(2.5 + 0.45 * k, 9)
    fig = _figure(figsize=(size, size), dpi=100)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=45 if k > 6 else 0)
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def plot_history(history: dict[str, list[float]], path, name: str = "encoder") -> None:
    """One Keras model's loss (and accuracy) per epoch, train and validation; with validation, a
    dashed line marks the epoch whose weights early stopping kept (lowest validation loss)."""
    panels = [m for m in ("loss", "accuracy") if m in history]
    best = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else None
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


def render_html(markdown: str, images: dict[str, bytes]) -> str:
    """A self-contained HTML page of the report's markdown: tables (with their column alignment),
    headings, paragraphs, and each ``![alt](name.png)`` line as that PNG inlined in base64."""
    import html
    import re

    body: list[str] = []
    table: list[list[str]] = []
    align: list[str] = []

    def close_table() -> None:
        if not table:
            return
        body.append("<table>")
        for i, cells in enumerate(table):
            tag = "th" if i == 0 else "td"
            body.append("<tr>" + "".join(
                f'<{tag} style="text-align:{align[j] if j < len(align) else "left"}">'
                f"{html.escape(c.replace('**', ''))}</{tag}>" for j, c in enumerate(cells)) + "</tr>")
        body.append("</table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(c and set(c) <= {"-", ":"} for c in cells):
                align = ["right" if c.endswith(":") and not c.startswith(":") else "left" for c in cells]
                continue
            if not table:
                align = []
            table.append(cells)
            continue
        close_table()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if image and image[2] in images:
            b64 = base64.b64encode(images[image[2]]).decode()
            body.append(f'<figure><img alt="{html.escape(image[1])}" src="data:image/png;base64,{b64}"></figure>')
        elif line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    close_table()
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}")
    title = html.escape(markdown.splitlines()[0].lstrip("# "))
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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
        markdown = markdown.replace(f"]({name})", f"](data:image/png;base64,{base64.b64encode(data).decode()})")
    return markdown


def render_stages(stages: dict[str, dict[str, Any]], engine: str) -> str:
    """Markdown table of one run's stages: status, own seconds, seconds waited for the Keras lock,
    and where each ran (host and pid)."""
    lines = [f"# marginflow run: stages (engine: {engine})", "", "| stage | status | seconds | waited s | where |",
             "|:---|:---|---:|---:|:---|"]
    for name, s in stages.items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.2f} | {s.get('waited', 0.0):.2f} | {s['where']} |")
    return "\n".join(lines) + "\n"
