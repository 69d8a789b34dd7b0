"""Fine-tune a classifier on a backbone: linear head, last blocks, LoRA or full, for small imbalanced sets.

WEIGHTS is any file dinolab.load_model reads (or a `dinolab train` run folder); TRAIN_DATA is a
class-per-subfolder folder, a .csv/.txt of 'path,label' rows, or a builtin: set. Without --val a
stratified share of every class is held out (val_fraction, printed). Modes: head (linear head on
frozen CLS [+ mean patch] features), last:N (the last N blocks and the final norm too), lora
(low-rank adapters on qkv / proj / fc1 / fc2, merged into the weights when saved) and full (every
parameter, layer-wise lr decay 0.65, drop-path 0.1). AdamW, warm-up then cosine, random resized crop
and flip (--no-crop, --no-flip), gradient clipping, early stopping on the validation balanced
accuracy (--patience), then temperature scaling on the validation split.
Imbalance: --balance sampler (class-balanced sampling), --loss-weights inverse|effective (Cui et al.
2019, --beta), --logit-adjust loss|posthoc (Menon et al. 2021, --tau), --label-smoothing.
OUT receives classifier.safetensors (backbone + head, class names, preprocessing, temperature),
config.yaml, metrics.jsonl, confusion.png, summary.json and checkpoint.pt; an existing run there is
kept unless --force (start over) or --resume (continue it, with its config.yaml; flags and key=value
overrides still apply). SIGTERM / Ctrl-C save a checkpoint after the current step and stop.
Examples:
  dinolab finetune backbone.safetensors photos/ --out clf/
  dinolab finetune runs/pretrain photos/ --val photos_val/ --mode lora --loss-weights effective --out clf/
  dinolab finetune dinov2_vits14.pth labels.csv --mode last:2 --balance sampler --no-flip --out clf/
  dinolab finetune --resume --out clf/
"""

from __future__ import annotations

import argparse

_SHARED = ("image_size", "mean", "std", "device", "precision", "progress")
_POSITIONAL = ("weights", "train_data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.options import add_inference_arguments
    from ..finetune.config import FinetuneConfig
    from ..runtime.config_loader import add_flags

    parser.add_argument("weights_arg", nargs="?", metavar="WEIGHTS", help="backbone weights or a `dinolab train` run")
    parser.add_argument("train_data_arg", nargs="?", metavar="TRAIN_DATA",
                        help="labelled images: class folders, .csv/.txt of path,label, or builtin:NAME")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. epochs=10 lr=1e-4")
    parser.add_argument("--out", metavar="DIR", help="run folder for the classifier (required)")
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (keys of --print-config)")
    add_flags(parser, FinetuneConfig, skip=_SHARED + _POSITIONAL)
    group = add_inference_arguments(parser, only=_SHARED, title="running the backbone (defaults: --print-config)")
    for action in group._group_actions:  # defaults are FinetuneConfig's: a flag not given stays out
        action.default = argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="replace an earlier run in OUT")
    group.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")


def _split_positionals(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``(WEIGHTS / TRAIN_DATA given, key=value overrides)``: argparse fills the optional positionals first, so
    ``dinolab finetune --resume --out D epochs=5`` puts ``epochs=5`` in WEIGHTS; such words go back to overrides."""
    from pathlib import Path

    from ..finetune.config import FINETUNE_SCHEMA

    keys = set(FINETUNE_SCHEMA.valid_keys())
    words = [w for w in (args.weights_arg, args.train_data_arg) if w is not None] + list(args.overrides)
    is_override = [("=" in w and w.split("=", 1)[0] in keys and not Path(w).exists()) for w in words]
    return [w for w, o in zip(words, is_override) if not o], [w for w, o in zip(words, is_override) if o]


def resolve(args: argparse.Namespace):
    """The settings: defaults (or OUT/config.yaml on --resume), --config, positionals, flags, key=value."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..finetune.config import CONFIG_NAME, FINETUNE_SCHEMA, FinetuneConfig
    from ..runtime.config_loader import check_fields, flag_values

    if args.resume and args.config:
        raise ConfigError("--resume continues with the run's own config.yaml; drop --config (flags and key=value "
                          "overrides are still accepted)")
    saved = Path(args.out) / CONFIG_NAME if args.resume and args.out else None
    source = args.config or (saved if saved is not None and saved.is_file() else None)
    cfg = FINETUNE_SCHEMA.load(source, [])
    positionals, overrides = _split_positionals(args)
    if len(positionals) > 2:
        raise ConfigError(f"unexpected argument(s) {' '.join(positionals[2:])}: give WEIGHTS TRAIN_DATA, then "
                          f"key=value settings (keys of --print-config)")
    given = dict(zip(_POSITIONAL, positionals))
    FINETUNE_SCHEMA.merge(cfg, {**given, **flag_values(args, FinetuneConfig)}, where=" (command line)")
    FINETUNE_SCHEMA.apply_overrides(cfg, overrides)
    check_fields(cfg)
    return cfg


def _print_summary(result, out: str) -> None:
    from ._evalio import pct, table

    s = result.summary
    held = f", {s['held_out_from_train']} of them held out from TRAIN_DATA" if s["held_out_from_train"] else ""
    print(f"finetune ({s['mode']}): {s['train_images']} training and {s['val_images']} validation images{held}; "
          f"{s['epochs_run']} epoch(s), best epoch {s['best_epoch']}"
          f"{' (early stop)' if s['early_stopped'] else ''}")
    print(f"validation: accuracy {pct(s['val_accuracy'])}%, balanced accuracy {pct(s['val_balanced_accuracy'])}%, "
          f"macro-F1 {pct(s['val_macro_f1'])}%")
    rows = [(c, result.val_metrics["per_class"][c]["support"], pct(r)) for c, r in s["val_per_class_recall"].items()]
    print(table(["class", "val images", "recall %"], rows))
    print(f"temperature {s['temperature']:.3f}: validation NLL {s['val_nll_before']:.4f} -> {s['val_nll_after']:.4f}")
    if s["unreadable_images"]:
        print(f"skipped {s['unreadable_images']} unreadable image(s), listed in {out}/skipped.log")
    print(f"classifier -> {result.classifier_path}")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..finetune import finetune
    from ..runtime.config_loader import to_yaml

    cfg = resolve(args)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    missing = [n for n, v in (("WEIGHTS", cfg.weights), ("TRAIN_DATA", cfg.train_data), ("--out", args.out)) if not v]
    if missing:
        raise ConfigError(f"dinolab finetune needs {', '.join(missing)}")
    result = finetune(cfg.weights, cfg.train_data, args.out, val=cfg.val, mode=cfg.mode, force=args.force,
                      resume=args.resume, config=cfg)
    if result.stopped_by:
        import signal

        print(f"stopped by {result.stopped_by}; continue with: dinolab finetune --resume --out {args.out}")
        return 128 + int(getattr(signal, result.stopped_by))
    _print_summary(result, args.out)
    return 0
