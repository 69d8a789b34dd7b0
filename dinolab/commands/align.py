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
(start over) or --resume (continue from its checkpoint).
Examples:
  dinolab align --weights backbone.safetensors --pairs builtin:shapes --out aligned/
  dinolab zeroshot --aligned aligned/ --classes "circle,square,triangle,star,cross" builtin:shapes
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, metavar="W", help="backbone weights (kept frozen)")
    parser.add_argument("--pairs", required=True, metavar="PAIRS",
                        help="CSV with columns image,caption, or builtin:shapes[?n=..&size=..]")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder for the aligned model")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the pairs (default 30)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="B", help="pairs per step (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--embed-dim", type=int, default=256, metavar="E", help="joint embedding size (default 256)")
    parser.add_argument("--head-blocks", type=int, default=0, metavar="N",
                        help="transformer blocks in the vision head (default 0: an MLP on pooled features, "
                             "fastest; dino.txt uses 2)")
    parser.add_argument("--text-width", type=int, default=128, help="text transformer width (default 128)")
    parser.add_argument("--text-depth", type=int, default=2, help="text transformer blocks (default 2)")
    parser.add_argument("--word-dropout", type=float, default=0.3, metavar="P",
                        help="probability of leaving a caption word out in training (default 0.3)")
    parser.add_argument("--image-size", type=int, default=224, metavar="PX",
                        help="centre-crop size the backbone sees (default 224)")
    parser.add_argument("--no-copy-backbone", action="store_true",
                        help="store only a reference to WEIGHTS in OUT instead of a copy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, bf16 or fp16 (backbone pass)")
    parser.add_argument("--num-workers", type=int, default=2, metavar="N", help="decoding processes (default 2)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.1, metavar="F",
                        help="stop if more than this share of the images cannot be read (default 0.1)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="replace an earlier run in OUT")
    group.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..text import align

    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {args.num_workers}")
    model = align(args.weights, args.pairs, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, embed_dim=args.embed_dim, head_blocks=args.head_blocks,
                  text_width=args.text_width, text_depth=args.text_depth, word_dropout=args.word_dropout,
                  image_size=args.image_size, device=args.device, precision=args.precision,
                  num_workers=args.num_workers, seed=args.seed, copy_backbone=not args.no_copy_backbone,
                  force=args.force, resume=args.resume, max_bad_fraction=args.max_bad_fraction)
    last = model.history[-1] if model.history else {}
    print(f"aligned {args.weights} on {args.pairs}: {len(model.history)} epoch(s) run, final loss "
          f"{last.get('loss', float('nan')):.4f}, logit scale {model.scale:.1f} -> {args.out}")
    if "zeroshot_acc" in last:
        print(f"zero-shot accuracy on the pairs' own classes: {last['zeroshot_acc']:.3f}")
    if model.skipped:
        where, reason = model.skipped[0]
        print(f"skipped {len(model.skipped)} pair(s), e.g. {where}: {reason}; full list in {args.out}/skipped.log")
    print("backbone unchanged (bit-identical state dict)")
    return 0
