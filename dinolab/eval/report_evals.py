"""The evaluation section of the HTML report: each result as the table its command prints.

Results written by ``dinolab knn|linear|fewshot --out F.json`` carry ``"command"``; they are shown
as the command shows them, in percent: k-NN per k, the linear probe's grid and best row, few-shot
per k with its 95% interval and ``N of M`` classes, and per-class recall as bars. Other JSON
(``objects``, ``retrieve``, anything else) falls back to the generic tables of
:func:`dinolab.eval.report.json_tables`.

The run's own comparison with random initialisation is read from ``metrics.jsonl`` (the last
``knn_top1@K`` next to ``knn_top1_random_init@K``) or from ``summary.json`` (``{"knn": {K: top1},
"knn_random_init": {K: top1}}``), whichever the run has.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

RANDOM_KEY = "knn_top1_random_init@"
TRAINED_KEY = "knn_top1@"


def _pct(x: Any) -> str:
    return "-" if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) else f"{100 * x:.2f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """An HTML table of already formatted (unescaped) cells; cells starting with ``<div`` are HTML."""
    def cell(c: Any) -> str:
        c = str(c)
        return c if c.startswith("<div") else html.escape(c)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table class=eval>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bar(x: Any) -> str:
    """A horizontal bar for a fraction in [0, 1], labelled in percent."""
    if _pct(x) == "-":
        return "-"
    width = max(0.0, min(1.0, float(x))) * 100
    return (f'<div class=bar><div class=fill style="width:{width:.1f}%"></div>'
            f"<span>{_pct(x)}</span></div>")


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"<p class=note>note: {html.escape(str(n))}</p>" for n in dict.fromkeys(notes))


def per_class_bars(per_class: dict, title: str = "per-class recall") -> str:
    """``{class: {"recall", "support", "f1"}}`` as a table with recall bars."""
    rows = [(c, v.get("support", ""), _bar(v.get("recall")), _pct(v.get("f1")))
            for c, v in per_class.items() if isinstance(v, dict)]
    return _table(["class", "support", "recall %", "F1 %"], rows, title) if rows else ""


def render_knn(d: dict) -> str:
    res = d.get("results") or {}
    rows = [(k, r.get("k_used", k), _pct(r.get("top1")), _pct(r.get("top5")), _pct(r.get("balanced_accuracy")),
             _pct(r.get("macro_f1"))) for k, r in res.items()]
    head = (f"k-NN on {d.get('n_train', '?')} training and {d.get('n_val', '?')} validation images, "
            f"T = {d.get('temperature', '?')}")
    out = _table(["k", "used", "top-1 %", "top-5 %", "balanced %", "macro-F1 %"], rows, head)
    out += _notes([n for r in res.values() for n in r.get("notes", [])])
    return out + per_class_bars(d.get("per_class") or {}, f"per-class recall (k = {d.get('best_k', '?')})")


def render_linear(d: dict) -> str:
    r = d.get("result") or {}
    name = "C" if r.get("method") == "logreg" else "lr"
    kind = "logistic regression" if name == "C" else f"linear probe ({r.get('epochs', '?')} epochs)"
    best = r.get("best")
    grid = [(f"{float(v):g}" + (" *" if best is not None and float(v) == float(best) else ""), _pct(a))
            for v, a in (r.get("grid") or {}).items()]
    head = f"{kind} on {d.get('n_train', '?')} training and {d.get('n_val', '?')} validation images"
    out = _table([name, f"{r.get('selection', 'val')} top-1 %"], grid, head) if grid else ""
    out += _table([f"best {name}", "top-1 %", "top-5 %", "balanced %", "macro-F1 %"],
                  [(f"{float(best):g}" if best is not None else "-", _pct(r.get("top1")), _pct(r.get("top5")),
                    _pct(r.get("balanced_accuracy")), _pct(r.get("macro_f1")))])
    out += _notes(([r["selection_note"]] if r.get("selection_note") else []) + list(r.get("notes", [])))
    return out + per_class_bars(r.get("per_class") or {})


def render_fewshot(d: dict) -> str:
    res = d.get("results") or {}
    rows = []
    for k, r in res.items():
        skipped = r.get("skipped_classes") or {}
        n = r.get("n_classes", "?")
        classes = f"{n} of {n + len(skipped)}" if skipped and isinstance(n, int) else str(n)
        if "skipped" in r or "accuracy" not in r:
            rows.append((k, classes, "-", "-", "-", "-"))
            continue
        acc = r["accuracy"]
        rows.append((k, classes, _pct(acc.get("mean")), "± " + _pct(acc.get("half_width")),
                     _pct((r.get("balanced_accuracy") or {}).get("mean")), _pct((r.get("macro_f1") or {}).get("mean"))))
    head = (f"{d.get('classifier', '')} few-shot on {d.get('n_images', '?')} images, "
            f"{d.get('episodes', '?')} episodes per k")
    out = _table(["k", "classes", "accuracy %", "95% CI", "balanced %", "macro-F1 %"], rows, head)
    notes = [f"k={k}: left out for too few images: " + ", ".join(f"{c} ({m})" for c, m in r["skipped_classes"].items())
             for k, r in res.items() if r.get("skipped_classes")]
    notes += [f"k={k} skipped: {r['skipped']}" for k, r in res.items() if r.get("skipped")]
    if any(r.get("skipped_classes") for r in res.values()):
        notes.append("a row with \"N of M\" classes is scored over those N classes only")
    out += _notes(notes + ["95% CI is the Student-t interval of the mean over episodes"])
    scored = [k for k, r in res.items() if r.get("per_class_recall")]
    names = list(dict.fromkeys(c for k in scored for c in res[k]["per_class_recall"]))
    if names:
        out += _table(["class"] + [f"k={k} recall %" for k in scored],
                      [[c] + [_bar(res[k]["per_class_recall"][c].get("mean")) if c in res[k]["per_class_recall"]
                              else "left out" for k in scored] for c in names], "per-class recall (mean over episodes)")
    return out


def render_compare(d: dict) -> str:
    from ..compare.report import render_compare as render

    return render(d)


RENDERERS: dict[str, Callable[[dict], str]] = {"knn": render_knn, "linear": render_linear, "fewshot": render_fewshot,
                                               "compare": render_compare}


def render_evaluation(data: Any) -> str | None:
    """HTML for a result of a known command (see :data:`RENDERERS`); None for anything else."""
    if isinstance(data, dict) and data.get("command") in RENDERERS:
        return RENDERERS[data["command"]](data)
    return None


def random_init_comparison(run: Path) -> str:
    """The run's k-NN top-1 after pretraining vs at random initialisation, as a table ('' when the run has none)."""
    trained: dict[str, float] = {}
    random: dict[str, float] = {}
    summary = run / "summary.json"
    if summary.is_file():
        try:
            s = json.loads(summary.read_text(encoding="utf-8"))
            trained = {str(k): v for k, v in (s.get("knn") or {}).items()}
            random = {str(k): v for k, v in (s.get("knn_random_init") or {}).items()}
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
    metrics = run / "metrics.jsonl"
    if not random and metrics.is_file():
        with open(metrics, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(rec, dict):
                    continue
                for key, v in rec.items():
                    if key.startswith(RANDOM_KEY):
                        random[key[len(RANDOM_KEY):]] = v
                    elif key.startswith(TRAINED_KEY):
                        trained[key[len(TRAINED_KEY):]] = v
    ks = [k for k in random if k in trained]
    if not ks:
        return ""
    rows = []
    for k in sorted(ks, key=lambda k: (len(k), k)):
        gain = trained[k] - random[k] if all(_pct(x) != "-" for x in (trained[k], random[k])) else None
        rows.append((k, _pct(trained[k]), _pct(random[k]), "-" if gain is None else f"{100 * gain:+.2f}"))
    return _table(["k", "pretrained top-1 %", "random init top-1 %", "gain (points)"], rows,
                  "k-NN of this run vs the same architecture at random initialisation")


def sibling_results(run: Path) -> list[Path]:
    """Result JSON files next to ``run``: ``<run name>*.json`` in its parent folder."""
    parent = run.resolve().parent
    name = run.resolve().name
    return sorted(p for p in parent.glob(f"{name}*.json") if p.is_file())


CSS = """
.eval td{text-align:right}.eval td:first-child{text-align:left}.eval caption{white-space:nowrap}
.bar{position:relative;width:160px;height:16px;background:#eef1f6;border-radius:3px;text-align:left}
.bar .fill{position:absolute;left:0;top:0;bottom:0;background:#a9c4ee;border-radius:3px}
.bar span{position:relative;padding-left:4px;font-size:12px;line-height:16px}
"""


def result_label(path: Path, run: Path) -> str:
    """How a result file is named in the report: relative to the run when inside it, else its path."""
    try:
        return str(path.resolve().relative_to(run.resolve()))
    except ValueError:
        return os.fspath(path)
