"""One self-contained HTML page for a run: training curves, configuration, evaluation tables, pictures.

Reads RUN_DIR/metrics.jsonl (plotted against step), config.yaml, every *.json result (k-NN,
linear, few-shot, objects...) and the pictures (attention, PCA, object masks) found in RUN_DIR
and up to three folders below it, results next to it (RUN_DIR*.json, e.g. runs/shapes.knn.json)
and those given with --results. k-NN, linear and few-shot results are shown as the tables their
commands print, with per-class recall bars; the run's k-NN against random initialisation when it
has it. Plots and pictures are embedded, so the page is one file that opens offline. Examples:
  dinolab report runs/shapes            # writes runs/shapes/report.html
  dinolab report runs/shapes --results knn.json fewshot.json
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (from dinolab train --out) or a results folder")
    parser.add_argument("--out", default=None, metavar="FILE", help="output HTML file (default RUN_DIR/report.html)")
    parser.add_argument("--results", nargs="+", default=[], metavar="F.json",
                        help="evaluation results kept elsewhere (from knn/linear/fewshot --out) to include")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report")


def run(args: argparse.Namespace) -> int:
    from ..eval.report import write_report

    path = write_report(args.run_dir, args.out, force=args.force, results=args.results)
    print(f"wrote {path}")
    return 0
