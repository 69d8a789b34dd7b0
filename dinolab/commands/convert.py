"""Convert backbone weights between dinolab, Hugging Face and official DINO formats.

SRC is anything `dinolab.load_model` reads: a dinolab model (X.safetensors + X.json), an official
DINO / DINOv2 / DINOv3 .pth (hub backbone or training checkpoint), or a Hugging Face folder of
Dinov2Model / Dinov2WithRegistersModel / DINOv3ViTModel. It can also be the run directory of an
FSDP run (train.distributed=fsdp): the shards of its last checkpoint are merged into one backbone
(the teacher; --checkpoint-key student for the student).

--to picks the output format (default: "official" when DST ends in .pth/.pt, else "dinolab"):
  dinolab   DST.safetensors + DST.json (or DST/model.* for a folder)
  hf        DST/config.json + DST/model.safetensors + DST/preprocessor_config.json, loadable with
            transformers' from_pretrained / AutoImageProcessor
  official  DST.pth with the official hub key names (DINOv3 / DINOv2 / DINO v1 layout by architecture)

The model's preprocessing (input size, resize rule, normalisation; see `model.preprocess`) is kept in
dinolab and hf outputs; the official .pth layout has no place for it (loading it back gives the
official defaults).

Examples:
  dinolab convert dinov2_vits14_pretrain.pth vits14            # -> vits14.safetensors + vits14.json
  dinolab convert vits14.safetensors hf_vits14 --to hf
  dinolab convert checkpoint.pth student.pth --checkpoint-key student --to official
  dinolab convert runs/vitl_fsdp vitl_teacher                  # FSDP shards -> one weights file
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="weights to read (file or folder)")
    parser.add_argument("dst", metavar="DST", help="where to write")
    parser.add_argument("--to", choices=("dinolab", "hf", "official"), default=None,
                        help="output format (default: official for .pth/.pt, else dinolab)")
    parser.add_argument("--checkpoint-key", default=None,
                        help="entry of a training checkpoint to convert (default: teacher)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads, for widths whose head count cannot be inferred (default: D/64)")
    parser.add_argument("--pos-embed-resize", choices=("official", "hf"), default=None,
                        help="position-embedding resize rule stored with a dinolab model (default: the source's)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path
    from types import SimpleNamespace

    from ..io import check_writable
    from ..models import weights
    from ..models.formats import dinolab_format
    from ..runtime.fsdp import consolidate, is_sharded_run

    to = args.to or ("official" if Path(args.dst).suffix in (".pth", ".pt") else "dinolab")
    outputs = {"dinolab": dinolab_format.paths_for(args.dst), "hf": (Path(args.dst) / "config.json",
               Path(args.dst) / "model.safetensors", Path(args.dst) / "preprocessor_config.json"),
               "official": (Path(args.dst),)}[to]
    for path in outputs:  # refuse before the (possibly long) read
        check_writable(path, force=args.force)
    overrides = {"num_heads": args.num_heads} if args.num_heads else {}
    if is_sharded_run(args.src):  # an FSDP run: merge the shards of its last checkpoint
        key = args.checkpoint_key or "teacher"
        model = consolidate(args.src, key)
        model.preprocess = _run_preprocess(Path(args.src))
        if args.pos_embed_resize:
            model.config["pos_embed_resize"] = args.pos_embed_resize
        loaded = SimpleNamespace(path=Path(args.src), format="dinolab sharded checkpoint", family="", source=key)
    else:
        loaded = weights.read_weights(args.src, checkpoint_key=args.checkpoint_key, **overrides)
        if args.pos_embed_resize:
            loaded.config["pos_embed_resize"] = args.pos_embed_resize
        model = weights.build_model(loaded).eval()
    what = " ".join(p for p in (loaded.format, loaded.family, f"({loaded.source})" if loaded.source else "") if p)
    print(f"read {loaded.path} [{what}]: embed_dim={model.embed_dim} depth={model.depth} heads={model.num_heads} "
          f"patch={model.patch_size} registers={model.num_register_tokens}")
    if model.preprocess is not None:
        print(f"preprocess: {model.preprocess.describe()}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if to == "dinolab":
            meta = {"converted_from": str(loaded.path), "source_format": loaded.format,
                    "source_family": loaded.family or "", "checkpoint_entry": loaded.source}
            weights.save_model(model, args.dst, overwrite=args.force, metadata=meta)
            out = " + ".join(str(p) for p in outputs)
        elif to == "hf":
            out = weights.export_hf(model, args.dst, overwrite=args.force)
        else:
            out = weights.export_official(model, args.dst, overwrite=args.force)
            if model.preprocess is not None and model.preprocess != weights.Preprocess():
                print("note: the official .pth layout cannot record the preprocessing above; loading it back "
                      "gives the official defaults (224 px, ImageNet mean/std): pass --image-size etc. to commands")
    for w in caught:
        print(f"note: {w.message}")
    print(f"wrote {out} [{to}]")
    return 0


def _run_preprocess(run):
    """The preprocessing a training run recorded in its exported backbone (same crops for teacher and student)."""
    import json

    from ..models.preprocess import Preprocess

    for name in ("teacher_backbone.json", "student_ema_backbone.json"):
        record = json.loads((run / name).read_text()) if (run / name).is_file() else {}
        if "preprocess" in record:
            return Preprocess.from_dict(record["preprocess"], str(run / name))
    return None
