"""How a comparison is shown: the terminal table, ``results.json`` and ``compare.html``.

The HTML page is built with the machinery of ``dinolab report`` (:mod:`dinolab.eval.report`: one
self-contained file, inline CSS, no script; :mod:`dinolab.eval.report_evals`: tables and per-class
recall bars). :func:`render_compare` is also registered there, so ``dinolab report`` shows a
``results.json`` of ``dinolab compare`` the same way. Confusion matrices are HTML tables shaded by
the row-normalised share (rows: true class, columns: predicted class).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

METRIC_NAMES = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced"), ("macro_f1", "macro-F1"),
                ("worst_class_recall", "worst class"), ("ece", "ECE"))


def _ci(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    return f"{100 * m['value']:.1f} [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"


def table_rows(d: dict) -> list[list[str]]:
    return [[r["name"]] + [_ci(r["metrics"].get(k)) for k, _ in METRIC_NAMES] + [f"{r['wall_s']:.1f}"]
            for r in d["results"]]


def headers() -> list[str]:
    return ["method"] + [f"{h} %" for _, h in METRIC_NAMES] + ["time s"]


def _confusion(names: list[str], cm: list[list[int]], caption: str) -> str:
    cells = []
    for i, row in enumerate(cm):
        total = max(sum(row), 1)
        tds = "".join(f'<td style="background:rgba({"40,110,200" if i == j else "220,60,40"},'
                      f'{min(1.0, v / total) * 0.85:.2f})">{v}</td>' for j, v in enumerate(row))
        cells.append(f"<tr><th>{html.escape(names[i])}</th>{tds}</tr>")
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    return (f"<table class=confusion><caption>{html.escape(caption)}</caption><thead>{head}</thead>"
            f"<tbody>{''.join(cells)}</tbody></table>")


def render_compare(d: dict) -> str:
    """HTML of a ``dinolab compare`` results dict: the table, per-class recall bars, confusion matrices."""
    from ..eval.report_evals import _bar, _table

    names = list(d.get("classes") or [])
    results = d.get("results") or []
    counts = ", ".join(f"{c} {n}/{m}" for c, n, m in zip(names, d.get("train_counts", []), d.get("test_counts", [])))
    out = _table(headers(), table_rows(d), f"{d.get('n_train', '?')} training and {d.get('n_test', '?')} test "
                                           f"images; value [95% bootstrap interval], percent")
    out += f"<p class=note>images per class (train/test): {html.escape(counts)}</p>"
    out += ("<p class=note>intervals: 95% percentile bootstrap over the test images (few-shot: over episodes and "
            "test images); the bootstrap of ECE is biased upwards, so its interval can lie above the value. "
            "+balanced / +logit-adj: the method with imbalance handling (class-frequency-normalised votes or "
            "class-balanced loss weights; post-hoc logit adjustment, logits - log prior)</p>")
    recall_rows = [[c] + [_bar((r["per_class"].get(c) or {}).get("recall")) for r in results] for c in names]
    out += _table(["class"] + [r["name"] for r in results], recall_rows, "per-class recall")
    out += "<div class=grid>" + "".join(
        _confusion(names, r["confusion"], r["name"] + (f" (summed over {r['episodes']} episodes)" if r.get("episodes")
                                                       else "")) for r in results) + "</div>"
    return out


CONFUSION_CSS = ".confusion td{text-align:right;min-width:22px}.confusion th{font-size:11px}"


def write_outputs(result: Any, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``DIR/results.json`` and ``DIR/compare.html``, atomically."""
    from ..eval.report import _page
    from ..io import atomic_save_text, json_value

    out = Path(out_dir)
    d = json_value(result.to_dict())
    atomic_save_text(out / "results.json", json.dumps(d, indent=2) + "\n")
    sections = [("compare", "Comparison", render_compare(d))]
    if d.get("bad"):
        listing = html.escape("\n".join(f"{p}\t{r}" for p, r in d["bad"][:200]))
        sections.append(("bad", f"Unreadable files ({len(d['bad'])})", f"<pre>{listing}</pre>"))
    page = _page(out, sections, title="dinolab compare: " + str(d.get("data", out.name)), css=CONFUSION_CSS)
    atomic_save_text(out / "compare.html", page)
    return out / "results.json", out / "compare.html"
