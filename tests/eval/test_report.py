import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dinolab.errors import DataError, DinolabError
from dinolab.eval.report import build_report, json_tables, plot_curves, read_metrics, write_report


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "attention").mkdir(parents=True)
    lines = []
    for step in range(0, 100, 10):
        rec = {"step": step, "epoch": step // 50, "loss": 5.0 - step / 50, "lr": 1e-4 * step, "wd": 0.04,
               "momentum": 0.996, "teacher_temp": 0.04, "teacher_entropy": 2.0, "teacher_kl_uniform": 0.5}
        if step % 50 == 0:
            rec["knn_top1"] = 0.1 + step / 200
        lines.append(json.dumps(rec))
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps({"loss": 1.0}))  # no step
    lines.insert(6, json.dumps({"step": 55, "loss": float("nan"), "lr": "fast"}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "config.yaml").write_text("model:\n  name: vit_small  # <b>not bold</b>\n")
    (run / "knn.json").write_text(json.dumps({"k=10": {"top1": 0.51, "top5": 0.9}, "k=20": {"top1": 0.53, "top5": 0.91},
                                              "train_images": 100}))
    (run / "model.json").write_text(json.dumps({"embed_dim": 384}))
    (run / "model.safetensors").write_bytes(b"")
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(run / "attention" / "cat_sheet.png")
    Image.fromarray(g.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(run / "attention" / "cat_attn_head0.png")
    Image.fromarray(g.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(run / "tiny.png")
    return run


def test_read_metrics_skips_bad_lines_and_values_with_notes(tmp_path):
    run = make_run(tmp_path)
    m = read_metrics(run / "metrics.jsonl")
    assert m.records == 11  # 10 good lines + the step-55 line
    assert [s for s, _ in m.series["loss"]] == [float(s) for s in range(0, 100, 10)]  # NaN loss at 55 left out
    assert len(m.series["knn_top1"]) == 2
    notes = " ".join(m.notes)
    assert "1 line(s) of metrics.jsonl are not JSON objects" in notes and "line 4" in notes
    assert "no numeric \"step\"" in notes
    assert "2 non-numeric or non-finite" in notes


def test_plot_curves_groups_known_keys():
    from dinolab.eval.report import Metrics

    m = Metrics(series={"loss": [(0, 2.0), (1, 1.0)], "dino_loss": [(0, 1.0), (1, 0.5)], "lr": [(0, 0.1), (1, 0.2)],
                        "teacher_entropy": [(0, 3.0), (1, 2.0)], "teacher_kl_uniform": [(0, 0.0), (1, 1.0)],
                        "epoch": [(0, 0), (1, 0)], "grad_norm": [(0, 1.0), (1, 2.0)], "images": [(0, 64), (1, 64)]})
    titles = [t for t, _ in plot_curves(m)]
    assert titles == ["Loss", "Learning rate", "Teacher entropy and KL to uniform", "grad_norm"]
    png = plot_curves(m)[0][1]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_tables_pivot_nested_results():
    page = json_tables({"knn": {"10": {"top1": 0.5, "top5": 0.8}, "20": {"top1": 0.52, "top5": 0.81}}, "n": 3,
                        "meta": {"model": "a"}})
    assert "<th>top1</th><th>top5</th>" in page  # one row per k, one column per metric
    assert "<th>n</th><td>3</td>" in page and "<th>meta.model</th><td>a</td>" in page
    assert "not a table" in json_tables([1, 2])


def test_report_is_self_contained(tmp_path):
    run = make_run(tmp_path)
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 9  # 7 curve plots + the attention sheet + tiny.png
    # a folder with contact sheets shows only those; the per-image file is named in a note
    assert "cat_attn_head0.png" not in page and "1 per-image picture(s)" in page
    # a 16-pixel picture is displayed enlarged (x10 = 160 px) with sharp pixels
    assert 'width="160" style="image-rendering:pixelated"' in page
    assert all(s.startswith("data:image/") for s in srcs)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page  # config shown verbatim, escaped
    assert "knn.json" in page and "0.53" in page
    assert "model.json" not in page  # the architecture next to the weights is not a result
    assert "cat_sheet.png" in page
    with pytest.raises(DinolabError, match="--force"):
        write_report(run)
    write_report(run, force=True)
    # the report itself is not embedded in the next report
    assert build_report(run).count("report.html") == 0


def test_report_errors_on_missing_or_empty_run_dir(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no metrics.jsonl"):
        build_report(tmp_path / "empty")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _screenshot(page, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (CI installs it: apt-get install -y chromium); "
                    "cannot check the report in a real browser")
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)


def test_report_renders_in_headless_chromium(tmp_path):
    run = make_run(tmp_path)
    pixels = _screenshot(write_report(run), tmp_path)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 10  # not a blank page
    # the dark header band is drawn at the top, the light page background below it
    assert pixels[5:40, :600].mean() < 80
    assert pixels[-50:].mean() > 200
    # the loss plot (white canvas with a blue line) appears: some pixels are matplotlib's default blue
    blue = (np.abs(pixels[..., 0] - 31) < 30) & (np.abs(pixels[..., 1] - 119) < 30) & (np.abs(pixels[..., 2] - 180) < 30)
    assert blue.sum() > 200


# ---- the evaluation section ----------------------------------------------------------------------
def write_embeddings(path, counts, seed=0):
    from dinolab.eval.features import Embeddings

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    x = (np.eye(8)[labels] * 2 + 0.9 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    Embeddings([str(i) for i in range(len(labels))], x, labels=labels,
               classes=[f"digit{i}" for i in range(len(counts))]).save(path)
    return path


def real_results(tmp_path, run):
    """knn inside the run, linear next to it (run.linear.json), few-shot elsewhere: written by the commands."""
    from dinolab.cli import main

    train = write_embeddings(tmp_path / "train.npz", [12, 12, 12, 4])
    val = write_embeddings(tmp_path / "val.npz", [6, 6, 6, 6], seed=1)
    (tmp_path / "else").mkdir()
    where = {"knn": run / "knn_eval.json", "linear": tmp_path / f"{run.name}.linear.json",
             "fewshot": tmp_path / "else" / "fewshot.json"}
    two = ["--train-embeddings", str(train), "--val-embeddings", str(val)]
    assert main(["knn", *two, "--k", "10", "20", "--out", str(where["knn"])]) == 0
    assert main(["linear", *two, "--logreg", "--out", str(where["linear"])]) == 0
    assert main(["fewshot", "--embeddings", str(train), "--shots", "1", "5", "--episodes", "5",
                 "--out", str(where["fewshot"])]) == 0
    return {k: json.loads(p.read_text()) for k, p in where.items()}, where


def eval_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "loss": 5.0}, {"step": 10, "loss": 4.0, "knn_top1@20": 0.5325},
        {"step": 10, "knn_top1_random_init@20": 0.2}]) + "\n")
    return run


def pct(x):
    return f"{100 * x:.2f}"


def test_evaluations_are_the_tables_the_commands_print_in_percent(tmp_path):
    run = eval_run(tmp_path)
    res, where = real_results(tmp_path, run)
    page = build_report(run, results=[where["fewshot"]])
    section = page[page.index('id="evaluations"'):]
    # each result found: in the run, next to it, on the command line
    assert "knn_eval.json" in section and str(where["linear"]) in section and str(where["fewshot"]) in section
    # nothing flattened, no fractions
    for flat in ("results.10", "per_class.digit0", "grid.", "per_class_recall.", "0.5325"):
        assert flat not in section
    knn = res["knn"]["results"]
    row = re.search(r"<tr><td>20</td><td>\d+</td><td>([\d.]+)</td><td>-</td><td>([\d.]+)</td>", section)
    assert row and row.groups() == (pct(knn["20"]["top1"]), pct(knn["20"]["balanced_accuracy"]))
    assert knn["20"]["top5"] is None  # 4 classes: no top-5, shown as "-"
    # per-class recall as bars whose width is the recall
    recall = res["knn"]["per_class"]["digit3"]["recall"]
    assert f'style="width:{100 * recall:.1f}%"></div><span>{pct(recall)}</span>' in section
    # linear: the grid with the best value marked, then the best row
    lin = res["linear"]["result"]
    best = next(v for v in lin["grid"] if float(v) == float(lin["best"]))
    assert f"<td>{float(best):g} *</td><td>{pct(lin['grid'][best])}</td>" in section
    assert f"<td>{pct(lin['top1'])}</td>" in section
    # few-shot: intervals, "N of M" where a class was left out, and its per-class recall
    fs = res["fewshot"]["results"]
    assert f"<td>± {pct(fs['5']['accuracy']['half_width'])}</td>" in section
    assert "<td>3 of 4</td>" in section and "<td>left out</td>" in section
    assert "digit3 (4)" in section
    # the run's own comparison with random initialisation
    assert re.search(r"<td>20</td><td>53.25</td><td>20.00</td><td>\+33.25</td>", section)


def test_random_init_comparison_from_summary_and_missing_results_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"knn": {"10": 0.6, "20": 0.61}, "knn_random_init": {"20": 0.3}}))
    page = build_report(run)
    assert re.search(r"<td>20</td><td>61.00</td><td>30.00</td><td>\+31.00</td>", page)
    assert "summary.json</h3>" not in page  # shown as the comparison, not dumped
    with pytest.raises(DataError, match="nothing.json does not exist"):
        build_report(run, results=[tmp_path / "nothing.json"])


def test_report_command_takes_results(tmp_path, capsys):
    from dinolab.cli import main

    run = eval_run(tmp_path)
    _, where = real_results(tmp_path, run)
    assert main(["report", str(run), "--results", str(where["fewshot"])]) == 0
    page = (run / "report.html").read_text()
    assert "per-class recall (mean over episodes)" in page and "<td>3 of 4</td>" in page


def test_report_with_evaluations_renders_in_headless_chromium(tmp_path):
    run = eval_run(tmp_path)
    _, where = real_results(tmp_path, run)
    pixels = _screenshot(write_report(run, results=[where["fewshot"]]), tmp_path)
    assert pixels[5:40, :600].mean() < 80  # the header
    # the recall bars are drawn: pixels of their fill colour (#a9c4ee) next to the track colour (#eef1f6)
    fill = (np.abs(pixels - [169, 196, 238]) < 6).all(-1)
    track = (np.abs(pixels - [238, 241, 246]) < 3).all(-1)
    assert fill.sum() > 2000 and track.sum() > 2000
    # tables: many rows of text (dark pixels) below the header
    assert (pixels[60:].mean(-1) < 100).sum() > 5000
