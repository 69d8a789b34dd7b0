"""How much signal the teacher's DINO head can give: a finished run's head on its held-out images
(:func:`dinolab.bench.head.head_report`).

When the DINO loss of a run stays near ln K (the student's output uniform), the question is whether
the teacher's targets carry any signal. This reads a run directory (its ``config.yaml``, exported
teacher and ``checkpoint.pt``, loaded tensors-only), runs the teacher backbone and DINO head on the
run's held-out split at the run's input size, and prints :func:`~dinolab.bench.head.head_report`:
the cone of the bottleneck outputs (whose common part centering cancels), the logit spread over the
prototypes against random unit vectors', the targets' entropy (softmax and Sinkhorn-Knopp) and the
student-temperature entropy against ``ln K``, and effective ranks. The module docstring of
:mod:`dinolab.bench.head` says how to read them.

Examples:
  python bench/bench_head.py RUN                 # a run of `dinolab train --out RUN`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

from dinolab.bench.head import head_report  # noqa: E402
from dinolab.eval.features import embed  # noqa: E402
from dinolab.models.weights import load_model  # noqa: E402
from dinolab.runtime.checkpoint import load_checkpoint  # noqa: E402
from dinolab.train.config import load_config  # noqa: E402
from dinolab.train.data import build_run_data  # noqa: E402
from dinolab.train.evaluation import eval_image_size  # noqa: E402
from dinolab.train.objectives.dino_cls import dino_head  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(str(args.run / "config.yaml"), ["train.progress=false"])
    model = load_model(args.run / "teacher_backbone.safetensors")
    teacher = load_checkpoint(args.run)["teacher"]
    head = dino_head(model.embed_dim, config.dino)
    head.load_state_dict({k.removeprefix("dino_head."): v for k, v in teacher.items() if k.startswith("dino_head.")})
    head.float().eval()
    data = build_run_data(config)
    size = eval_image_size(config)
    cls = torch.from_numpy(embed(model, data.val, image_size=size, progress=False, precision="fp32").cls)
    report = head_report(cls, head, config.teacher.teacher_temp, config.dino.student_temp)
    print(f"{args.run}: DINO head on {len(cls)} held-out images at {size} px "
          f"(teacher temperature {config.teacher.teacher_temp}, student {config.dino.student_temp})")
    for name, value in report.items():
        print(f"  {name:<34} {value:8.3f}")


if __name__ == "__main__":
    main()
