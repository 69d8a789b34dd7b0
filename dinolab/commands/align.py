"""Align a text encoder to a frozen backbone (LiT / dino.txt) for zero-shot classification and search.

The backbone (WEIGHTS, any format dinolab.load_model reads) stays frozen, bit for bit. A small
vision head on concat(CLS, mean patch token) and a text transformer trained from scratch (with
a word vocabulary built from the captions) learn a joint embedding with the symmetric CLIP loss
and a learnable temperature. PAIRS is a CSV file with a header row 'image,caption' (relative
image paths are resolved against the CSV's folder; bad rows and unreadable images are skipped
and listed in OUT/skipped.log) or builtin:shapes (generated shapes with captions such as
"a red triangle on a striped background").
OUT receives the aligned model (aligned.json, heads.safetensors, tokenizer.json and a copy of
the backbone), metrics.jsonl and checkpoint.pt; an existing run there is kept unless --force
(start over) or --resume (continue from its checkpoint, with the settings saved in OUT/config.yaml;
flags and key=value overrides still apply). Every setting is also a key of a YAML file given with
--config (`dinolab align --print-config` lists them with their defaults); flags and key=value
overrides apply over it. SIGTERM / Ctrl-C save a checkpoint after the current step and stop.
Examples:
  dinolab align --weights backbone.safetensors --pairs builtin:shapes --out aligned/
  dinolab align --config align.yaml epochs=10 --out aligned/
  dinolab align --resume --out aligned/ epochs=40
  dinolab zeroshot --aligned aligned/ --classes "circle,square,triangle,star,cross" builtin:shapes
"""

from __future__ import annotations

import argparse

# num_workers stays AlignConfig's own flag: its default (0 for builtin: pairs, else 2) is not the shared one
_SHARED = ("image_size", "mean", "std", "device", "precision", "progress")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.options import add_inference_arguments
    from ..runtime.config_loader import add_flags
    from ..text.align_config import AlignConfig

    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. epochs=10 lr=1e-3")
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (keys of --print-config)")
    parser.add_argument("--out", metavar="DIR", help="run folder for the aligned model (required to train)")
    add_flags(parser, AlignConfig, skip=_SHARED)
    # the options every command runs a model with, parsed alike; their defaults are AlignConfig's, so a flag not
    # given stays out of the namespace and --config / config.yaml / key=value values are not overridden
    group = add_inference_arguments(parser, only=_SHARED, title="running the backbone (defaults: --print-config)")
    for action in group._group_actions:
        action.default = argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="replace an earlier run in OUT")
    group.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")


def resolve(args: argparse.Namespace):
    """The settings: defaults (or OUT/config.yaml on --resume), --config, flags, key=value overrides."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..runtime.config_loader import check_fields, flag_values
    from ..text.align_config import ALIGN_SCHEMA, CONFIG_NAME, AlignConfig

    saved = Path(args.out) / CONFIG_NAME if args.resume and args.out else None
    if args.resume and args.config:
        raise ConfigError("--resume continues with the run's own config.yaml; drop --config (flags and key=value "
                          "overrides are still accepted)")
    source = args.config or (saved if saved is not None and saved.is_file() else None)
    cfg = ALIGN_SCHEMA.load(source, [])
    ALIGN_SCHEMA.merge(cfg, flag_values(args, AlignConfig), where=" (command line)")
    ALIGN_SCHEMA.apply_overrides(cfg, args.overrides)
    check_fields(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..runtime.config_loader import to_yaml
    from ..text import align

    cfg = resolve(args)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    missing = [f"--{k}" for k in ("weights", "pairs") if getattr(cfg, k) is None] + ([] if args.out else ["--out"])
    if missing:
        raise ConfigError(f"dinolab align needs {', '.join(missing)} (flags, or keys of --config / key=value)")
    model = align(cfg.weights, cfg.pairs, out=args.out, config=cfg, force=args.force, resume=args.resume)
    if model.stopped_by:
        import signal

        print(f"stopped by {model.stopped_by}; continue with: dinolab align --resume --out {args.out}")
        return 128 + int(getattr(signal, model.stopped_by))
    last = model.history[-1] if model.history else {}
    print(f"aligned {cfg.weights} on {cfg.pairs}: {len(model.history)} epoch(s) run, final loss "
          f"{last.get('loss', float('nan')):.4f}, logit scale {model.scale:.1f} -> {args.out}")
    if "zeroshot_acc" in last:
        print(f"zero-shot accuracy on the pairs' own classes: {last['zeroshot_acc']:.3f}")
    if model.skipped:
        where, reason = model.skipped[0]
        print(f"skipped {len(model.skipped)} pair(s), e.g. {where}: {reason}; full list in {args.out}/skipped.log")
    print("backbone unchanged (bit-identical state dict)")
    return 0
