"""Self-supervised pretraining (DINO): a YAML config or preset plus key=value overrides.

With no argument it runs the embedded default: DINO on builtin:digits with a small ViT (a few
minutes on a laptop CPU), ending with the k-NN accuracy next to the same architecture at random
initialisation. CONFIG is a YAML file or a packaged preset name (listed below); keys it
does not set take the DINO v1 ViT-S/16 defaults. Overrides are dotted keys with YAML values.
The run directory receives config.yaml, metrics.jsonl, checkpoint.pt and the teacher backbone
(teacher_backbone.safetensors, loadable by dinolab.load_model); a distillation run
(distill.teacher=PATH: a frozen teacher) exports the EMA of the student instead
(student_ema_backbone.safetensors). SIGTERM / Ctrl-C save a checkpoint and stop; --resume
continues the same trajectory.

Examples:
  dinolab train
  dinolab train data.source=path/to/images train.epochs=50
  dinolab train dino_vits16 data.source=path/to/images --out runs/vits16
  dinolab train my.yaml optim.lr=1e-3 model.pretrained=dino_deitsmall16_pretrain.pth
  dinolab train --resume runs/vits16
  dinolab train distill_shapes distill.teacher=runs/shapes_teacher --out runs/distilled
  dinolab train --print-config dino_vits16
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", metavar="[CONFIG] [key=value ...]",
                        help="a YAML file or preset name (optional, first), then dotted overrides such as "
                             "optim.lr=1e-3")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint "
                                                            "(overrides, e.g. train.epochs=200, still apply)")
    parser.add_argument("--force", action="store_true", help="start over in an existing, non-empty --out directory")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (every key) and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the packaged presets and exit")
    parser.epilog = _presets_epilog()


def _presets_epilog() -> str:
    """Every packaged preset (dinolab/configs/*.yaml) with the first sentence of its comment."""
    import shutil
    import textwrap

    from ..train.config import list_presets, preset_summary

    names = list_presets()
    pad = max(len(n) for n in names) + 2
    width = max(60, min(shutil.get_terminal_size().columns, 120))
    lines = [f"presets ({len(names)}, in dinolab/configs/; use as CONFIG):"]
    for name in names:
        lines += textwrap.wrap(preset_summary(name), width, initial_indent=f"  {name:<{pad}}",
                               subsequent_indent=" " * (pad + 2)) or [f"  {name}"]
    return "\n".join(lines)


def _split(items: list[str]) -> tuple[str | None, list[str]]:
    from ..errors import ConfigError

    source, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item:
            overrides.append(item)
        elif i == 0:
            source = item
        else:
            raise ConfigError(f"{item!r} is neither the config (which must come first) nor a key=value override")
    return source, overrides


def run(args: argparse.Namespace) -> int:
    import signal

    from ..errors import ConfigError
    from ..train.config import list_presets, load_config
    from ..train.trainer import Trainer, default_run_dir

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    source, overrides = _split(args.args)
    if args.resume:
        if source is not None:
            raise ConfigError(f"--resume continues with the run's own config.yaml; drop {source!r} "
                              f"(key=value overrides are still accepted)")
        if args.out or args.force:
            raise ConfigError("--resume writes into the run it continues; drop --out/--force")
        trainer = Trainer.from_run(args.resume, overrides)
    else:
        config = load_config(source, overrides)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        trainer = Trainer(config, args.out or default_run_dir(), force=args.force)
    if args.print_config:
        print(trainer.config.to_yaml(), end="")
        return 0
    result = trainer.fit()
    if trainer.rank != 0:  # torchrun: rank 0 reports
        return 128 + int(getattr(signal, result.stopped_by)) if result.stopped_by else 0
    print(f"run directory: {result.run_dir} ({result.iterations} steps, {result.wall_time:.0f} s)")
    if result.stopped_by:
        print(f"stopped by {result.stopped_by}; continue with: dinolab train --resume {result.run_dir}")
        return 128 + int(getattr(signal, result.stopped_by))
    label = "student backbone (EMA)" if result.exported and result.exported.name.startswith("student") else \
        "teacher backbone"
    print(f"{label}: {result.exported} (dinolab.load_model reads it)")
    if result.knn:
        for k, acc in result.knn.items():
            start = (result.knn_start or {}).get(k)
            base = (result.knn_random_init or {}).get(k)
            raw = (result.knn_raw_pixels or {}).get(k)
            vs = [f"{label}: {v:.1%}" for label, v in ((f"at the start ({trainer.config.model.pretrained})", start),
                                                         ("random init", base), ("raw pixels", raw)) if v is not None]
            joined = (result.knn_patch_mean or {}).get(k)
            extra = f"; with the mean patch token (knn --patch-mean): {joined:.1%}" if joined is not None else ""
            print(f"k-NN top-1 @ k={k}: {acc:.1%}" + (f"   ({', '.join(vs)})" if vs else "") + extra)
    return 0
