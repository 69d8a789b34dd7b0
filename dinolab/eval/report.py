"""One self-contained HTML page summarising a run directory.

What a run directory may hold, and how each part is shown:

- ``metrics.jsonl``: one JSON object per line with ``step`` and any of ``loss`` (and other
  ``*loss*`` keys), ``lr``, ``wd``, ``momentum``, ``teacher_temp``, ``teacher_entropy``,
  ``teacher_kl_uniform``, ``knn_top1``, ``epoch``... Plotted against ``step`` with matplotlib
  (Agg, PNG). Malformed lines, lines without a numeric ``step`` and non-numeric values are
  skipped and counted in a note; any other numeric key gets a small plot of its own.
- ``config.yaml``: the resolved configuration, shown verbatim.
- ``*.json`` evaluation results, in the run, next to it (``<run name>*.json`` in its parent folder)
  or given as ``results``: those of ``knn``, ``linear`` and ``fewshot`` as the tables their commands
  print, in percent, with per-class recall bars (:mod:`dinolab.eval.report_evals`), preceded by the
  run's k-NN against random initialisation when ``metrics.jsonl`` or ``summary.json`` has it; any
  other JSON read generically: numbers, strings and nested dicts become tables (dicts of dicts
  sharing keys become one table with a row per outer key). The architecture JSON that sits next
  to a ``.safetensors`` file of the same name is skipped.
- pictures (``*.png``, ``*.jpg``, ``*.gif``, ``*.webp``; attention / PCA / object sheets):
  embedded, grouped by folder. Where a folder has contact sheets (``*sheet*``) only those are
  shown (they hold the per-image pictures); otherwise at most :data:`MAX_PICTURES_PER_FOLDER`.
  Small pictures are displayed enlarged with sharp pixels.

Everything (plots and pictures) is embedded as base64 ``data:`` URIs with inline CSS and no
script, so the page is one file that opens offline and can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .report_evals import CSS as EVAL_CSS
from .report_evals import random_init_comparison, render_evaluation, result_label, sibling_results

MAX_PICTURES_PER_FOLDER = 24
MAX_PICTURE_BYTES = 8 * 2 ** 20
MAX_JSON_BYTES = 2 * 2 ** 20
MAX_DEPTH = 3  # folders below the run directory that are searched
PICTURE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                 ".webp": "image/webp"}

# Curves drawn together: (title, keys); keys containing "loss" join the first group.
CURVE_GROUPS = [
    ("Loss", ["loss"]),
    ("Learning rate", ["lr"]),
    ("Weight decay", ["wd"]),
    ("Teacher momentum", ["momentum"]),
    ("Teacher temperature", ["teacher_temp"]),
    ("Teacher entropy and KL to uniform", ["teacher_entropy", "teacher_kl_uniform", "kl_uniform"]),
    ("k-NN accuracy", ["knn_top1", "knn_top5"]),
]
NOT_CURVES = {"step", "epoch", "time", "timestamp", "iteration"}


@dataclass
class Metrics:
    """Parsed ``metrics.jsonl``: ``series[key]`` is a list of ``(step, value)``; ``notes`` say what was skipped."""

    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    records: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_metrics(path: str | os.PathLike) -> Metrics:
    """Read a metrics.jsonl file tolerantly (see the module docstring)."""
    m = Metrics()
    bad_lines: list[int] = []
    no_step: list[int] = []
    skipped_values = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad_lines.append(lineno)
                continue
            if not isinstance(rec, dict):
                bad_lines.append(lineno)
                continue
            step = rec.get("step")
            if not _is_number(step):
                no_step.append(lineno)
                continue
            m.records += 1
            for key, value in rec.items():
                if key == "step":
                    continue
                if _is_number(value) and math.isfinite(value):
                    m.series.setdefault(key, []).append((float(step), float(value)))
                    m.last[key] = value
                elif isinstance(value, list):  # per-rank detail (peak_mem_mb_per_rank): not plotted
                    continue
                else:
                    skipped_values += 1
            m.last["step"] = step
    if bad_lines:
        m.notes.append(f"{len(bad_lines)} line(s) of metrics.jsonl are not JSON objects and were skipped "
                       f"(line {', '.join(map(str, bad_lines[:5]))}{', ...' if len(bad_lines) > 5 else ''})")
    if no_step:
        m.notes.append(f"{len(no_step)} line(s) of metrics.jsonl have no numeric \"step\" and were skipped "
                       f"(line {', '.join(map(str, no_step[:5]))}{', ...' if len(no_step) > 5 else ''})")
    if skipped_values:
        m.notes.append(f"{skipped_values} non-numeric or non-finite value(s) were left out of the plots")
    return m


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_curves(metrics: Metrics) -> list[tuple[str, bytes]]:
    """PNG plots of the metric series against step: ``[(title, png bytes)]``."""
    groups: list[tuple[str, list[str]]] = []
    used: set[str] = set()
    for title, keys in CURVE_GROUPS:
        if title == "Loss":
            keys = ["loss"] + sorted(k for k in metrics.series if "loss" in k and k != "loss")
        present = [k for k in keys if k in metrics.series]
        used.update(keys)
        if present:
            groups.append((title, present))
    # other keys get a plot each, unless constant (a batch size, a flag): nothing to see there
    groups += [(k, [k]) for k in sorted(metrics.series)
               if k not in used and k not in NOT_CURVES and len({v for _, v in metrics.series[k]}) > 1]
    return [(title, _plot(title, {k: metrics.series[k] for k in keys})) for title, keys in groups]


def _plot(title: str, series: dict[str, list[tuple[float, float]]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.0), dpi=100)
    ax = fig.add_subplot()
    for key, points in series.items():
        xs, ys = zip(*sorted(points))  # resumed runs may log steps out of order
        ax.plot(xs, ys, label=key, marker="o" if len(points) <= 20 else None, markersize=3, linewidth=1.4)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---- tables ---------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        if len(v) > 8:
            nums = [x for x in v if _is_number(x)]
            mean = f", mean {sum(nums) / len(nums):.4g}" if len(nums) == len(v) else ""
            return f"[{len(v)} values{mean}]"
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + ".")
        else:
            rows.append((key, v))
    return rows


def _is_flat_dict(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and not any(isinstance(x, dict) for x in v.values())


def _pivot_columns(d: dict[str, Any]) -> list[str] | None:
    """Columns of a table with one row per flat-dict child of ``d``, if at least two share most keys."""
    flat = [v for v in d.values() if _is_flat_dict(v)]
    columns: list[str] = []
    for v in flat:
        columns += [c for c in v if c not in columns]
    if len(flat) >= 2 and all(len(v) * 2 > len(columns) for v in flat):
        return columns
    return None


def _caption(path: str) -> str:
    return f"<caption>{html.escape(path)}</caption>" if path else ""


def json_tables(data: Any, path: str = "") -> str:
    """HTML tables for a JSON value, read generically.

    In each dict, children that are flat dicts sharing most of their keys become one table with a
    row per child (e.g. ``{"k=10": {"top1": .., "top5": ..}, "k=20": {...}}``); other nested dicts
    that hold such groups get tables of their own; everything else becomes key/value rows with
    dotted keys.
    """
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        data = {str(i): x for i, x in enumerate(data)}
    if not isinstance(data, dict):
        return f"<p class=note>not a table: {html.escape(_fmt(data))[:500]}</p>"
    columns = _pivot_columns(data)
    pivoted = {k: v for k, v in data.items() if columns is not None and _is_flat_dict(v)}
    own = {k: v for k, v in data.items() if isinstance(v, dict) and k not in pivoted
           and not _is_flat_dict(v) and _has_pivot(v)}
    rows = [r for k, v in data.items() if k not in pivoted and k not in own
            for r in (_flatten(v, f"{k}.") if isinstance(v, dict) else [(k, v)])]
    out = []
    if rows:
        out.append(f"<table>{_caption(path)}<tbody>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows) + "</tbody></table>")
    if pivoted:
        head = "<tr><th></th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
        body = "".join("<tr><th>" + html.escape(k) + "</th>" + "".join(
            f"<td>{html.escape(_fmt(v[c])) if c in v else ''}</td>" for c in columns) + "</tr>"
            for k, v in pivoted.items())
        out.append(f"<table>{_caption(path)}<thead>{head}</thead><tbody>{body}</tbody></table>")
    for k, v in own.items():
        out.append(json_tables(v, f"{path}.{k}" if path else k))
    return "".join(out) or "<p class=note>empty</p>"


def _has_pivot(d: dict[str, Any]) -> bool:
    return _pivot_columns(d) is not None or any(isinstance(v, dict) and _has_pivot(v) for v in d.values())


# ---- finding files --------------------------------------------------------------------------------
def _walk(run_dir: Path, suffixes: set[str], exclude: set[Path]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(run_dir):
        rel_depth = len(Path(root).relative_to(run_dir).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if rel_depth < MAX_DEPTH else []
        for name in sorted(files):
            p = Path(root) / name
            if p.suffix.lower() in suffixes and not name.startswith(".") and p.resolve() not in exclude:
                found.append(p)
    return found


def _pictures(run_dir: Path, exclude: set[Path]) -> tuple[dict[str, list[Path]], list[str]]:
    by_folder: dict[str, list[Path]] = {}
    for p in _walk(run_dir, set(PICTURE_TYPES), exclude):
        by_folder.setdefault(str(p.parent.relative_to(run_dir)), []).append(p)
    notes = []
    for folder, paths in by_folder.items():
        sheets = [p for p in paths if "sheet" in p.name]
        if sheets and len(sheets) < len(paths):
            notes.append(f"{folder}: showing the {len(sheets)} contact sheet(s); {len(paths) - len(sheets)} "
                         f"per-image picture(s) are in the folder")
            paths[:] = sheets
        big = [p for p in paths if p.stat().st_size > MAX_PICTURE_BYTES]
        paths[:] = [p for p in paths if p not in big]
        if big:
            notes.append(f"{len(big)} picture(s) in {folder} larger than {MAX_PICTURE_BYTES >> 20} MiB not embedded")
        if len(paths) > MAX_PICTURES_PER_FOLDER:
            notes.append(f"{folder}: showing {MAX_PICTURES_PER_FOLDER} of {len(paths)} pictures")
            del paths[MAX_PICTURES_PER_FOLDER:]
    return {k: v for k, v in by_folder.items() if v}, notes


def _display_size(data: bytes, min_side: int = 160) -> str:
    """An enlarging width attribute (and sharp pixels) for a picture smaller than ``min_side``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:  # a picture the browser may still show; leave it at its own size
        return ""
    k = math.ceil(min_side / max(w, h, 1))
    return f' width="{w * k}" style="image-rendering:pixelated"' if k > 1 else ""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0d0;font-size:13px}
nav{padding:8px 28px;background:#e7eaf0;font-size:14px}nav a{margin-right:16px;color:#24407a}
main{padding:8px 28px 40px}section{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{font-size:18px;margin:4px 0 12px}h3{font-size:15px;margin:14px 0 8px}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;max-width:100%}
figure img{max-width:100%;border:1px solid #dde1e8;border-radius:4px;image-rendering:auto}
figcaption{font-size:12px;color:#556;margin-top:2px;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}th,td{border:1px solid #dde1e8;padding:4px 9px;
text-align:left}td{font-variant-numeric:tabular-nums}thead th{background:#eef1f6}tbody th{background:#f8f9fb;
font-weight:600}pre{background:#f3f4f7;padding:10px;border-radius:6px;overflow:auto;font-size:12px;max-height:480px}
.note{color:#8a5a00;font-size:13px}caption{text-align:left;font-weight:600;font-size:13px;padding:2px 0}
"""


Section = tuple[str, str, str]  # (anchor, title, body html)


def build_report(run_dir: str | os.PathLike, exclude: tuple[str | os.PathLike, ...] = (),
                 results: Sequence[str | os.PathLike] = ()) -> str:
    """The HTML page for ``run_dir`` (see the module docstring); ``exclude``: files not to embed; ``results``:
    evaluation JSON files kept elsewhere to show as well.

    Raises:
        DataError: ``run_dir`` is not a folder, or holds nothing to report.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run} is not a folder; give the run directory written by `dinolab train --out RUN`")
    skip = {Path(p).resolve() for p in exclude}
    notes: list[str] = []
    sections = [s for s in (_curves_section(run, notes), _config_section(run),
                            _evaluations_section(run, skip, results, notes), _pictures_section(run, skip, notes),
                            _bad_files_section(run)) if s is not None]
    if not sections:
        raise DataError(f"{run} holds no metrics.jsonl, config.yaml, evaluation JSON or pictures; give the run "
                        f"directory written by `dinolab train --out RUN` (or a folder of results)")
    if notes:
        sections.append(("notes", "Notes", "<ul>" + "".join(f"<li class=note>{html.escape(n)}</li>" for n in notes)
                         + "</ul>"))
    return _page(run, sections)


def _curves_section(run: Path, notes: list[str]) -> Section | None:
    metrics_path = run / "metrics.jsonl"
    if not metrics_path.is_file():
        return None
    metrics = read_metrics(metrics_path)
    notes += metrics.notes
    body = ""
    if metrics.last:
        last = {"step": metrics.last.pop("step"), **metrics.last} if "step" in metrics.last else metrics.last
        body += "<h3>Latest value of each metric</h3>" + json_tables(last)
    plots = plot_curves(metrics)
    body += '<div class="grid">' + "".join(
        f'<figure><img alt="{html.escape(t)}" src="{_data_uri(png, "image/png")}"></figure>' for t, png in plots
    ) + "</div>"
    if not plots:
        body += "<p class=note>metrics.jsonl has no numeric series to plot</p>"
    return "curves", f"Training curves ({metrics.records} records)", body


def _config_section(run: Path) -> Section | None:
    config_path = run / "config.yaml"
    if not config_path.is_file():
        return None
    text = config_path.read_text(encoding="utf-8", errors="replace")
    return "config", "Configuration", f"<pre>{html.escape(text)}</pre>"


def _evaluations_section(run: Path, skip: set[Path], results: Sequence[str | os.PathLike],
                         notes: list[str]) -> Section | None:
    tables = []
    comparison = random_init_comparison(run)
    if comparison:
        tables.append(f"<h3>Pretraining vs random initialisation</h3>{comparison}")
    inside = [p for p in _walk(run, {".json"}, skip) if not p.with_suffix(".safetensors").exists()
              and p.name != "summary.json"]  # an architecture next to its weights is not a result
    given = {Path(r) for r in results}
    for p in dict.fromkeys([*inside, *sibling_results(run), *given]):
        rel = html.escape(result_label(p, run))
        if not p.is_file():
            raise DataError(f"results file {p} does not exist; give JSON files written by "
                            f"`dinolab knn|linear|fewshot ... --out F.json`")
        if p.stat().st_size > MAX_JSON_BYTES:
            notes.append(f"{rel} is larger than {MAX_JSON_BYTES >> 20} MiB and was not read")
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if p in given:  # named on the command line: the user expects to see it
                raise DataError(f"results file {p} is not valid JSON ({str(e)[:120]}); give JSON files written "
                                f"by `dinolab knn|linear|fewshot ... --out F.json`") from None
            notes.append(f"{rel} is not valid JSON ({html.escape(str(e))[:120]}) and was skipped")
            continue
        rendered = render_evaluation(data)
        tables.append(f"<h3>{rel}</h3>{rendered if rendered is not None else json_tables(data)}")
    return ("evaluations", "Evaluations", "".join(tables)) if tables else None


def _pictures_section(run: Path, skip: set[Path], notes: list[str]) -> Section | None:
    pictures, picture_notes = _pictures(run, skip)
    notes += picture_notes
    if not pictures:
        return None
    body = ""
    for folder, paths in sorted(pictures.items()):
        body += f"<h3>{html.escape(folder if folder != '.' else run.name)}</h3><div class=grid>"
        for p in paths:
            data = p.read_bytes()
            uri = _data_uri(data, PICTURE_TYPES[p.suffix.lower()])
            body += (f'<figure><img alt="{html.escape(p.name)}" src="{uri}"{_display_size(data)}>'
                     f"<figcaption>{html.escape(p.name)}</figcaption></figure>")
        body += "</div>"
    return "pictures", "Pictures", body


def _bad_files_section(run: Path) -> Section | None:
    bad_log = run / "bad_files.log"
    if not bad_log.is_file():
        return None
    lines = bad_log.read_text(encoding="utf-8", errors="replace").splitlines()
    more = f"\n... {len(lines) - 200} more" if len(lines) > 200 else ""
    listing = html.escape(chr(10).join(lines[:200]) + more)
    return "bad", f"Unreadable files ({len(lines)})", f"<pre>{listing}</pre>"


def _page(run: Path, sections: list[Section], title: str | None = None, css: str = "") -> str:
    from .. import __version__

    title = title or f"dinolab report: {run.resolve().name}"
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>{b}</section>' for a, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}{EVAL_CSS}{css}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(str(run.resolve()))} · dinolab {__version__}</p>"
            f"</header><nav>{nav}</nav><main>{body}</main></body></html>\n")


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, force: bool = False,
                 results: Sequence[str | os.PathLike] = ()) -> Path:
    """Write :func:`build_report` of ``run_dir`` (and ``results``) to ``out`` (default ``run_dir/report.html``),
    atomically.

    Refuses an existing ``out`` unless ``force``.
    """
    from ..io import atomic_save_text, check_writable

    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    check_writable(target, force=force)
    page = build_report(run_dir, exclude=(target,), results=results)
    atomic_save_text(target, page)
    return target
