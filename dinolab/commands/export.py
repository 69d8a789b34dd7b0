"""Export a backbone to ONNX (dynamic batch and image size), verified with ONNX Runtime against dinolab.

WEIGHTS is any file or folder dinolab.load_model reads. The graph takes pixel_values (B, C, H, W),
already resized and normalised (the recipe is in the file's metadata, key dinolab.preprocess), and
outputs cls (B, D), patches (B, N, D) and, for models with registers, registers (B, R, D). With
--dynamic (the default) H and W may be any multiples of the patch size: learned position tables
are resized inside the graph and RoPE is computed for the input's grid. --fp16 and --int8 also
write OUT.fp16.onnx (float16 weights, float32 inputs/outputs) and OUT.int8.onnx (ONNX Runtime
dynamic quantisation). Every file is then run by ONNX Runtime at two batch sizes and two image sizes
and compared with dinolab (fp32: relative error at most 1e-4); the check is printed, and a file that
fails it is not written. Needs the onnx extra: pip install 'dinolab[onnx]'.
Examples:
  dinolab export dinov2_vits14_pretrain.pth --out dinov2_vits14.onnx
  dinolab export weights.safetensors --out model.onnx --image-size 518 --int8
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="weights file or folder (any format dinolab.load_model reads)")
    parser.add_argument("--out", required=True, metavar="FILE.onnx", help="where to write the fp32 model")
    parser.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset (default 18; 18 or later)")
    parser.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                        help="dynamic height/width in whole patches (default); --no-dynamic fixes --image-size "
                             "(the batch stays dynamic)")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="traced (with --no-dynamic: the only) input size; default the model's preprocessing "
                             "size (224)")
    parser.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx")
    parser.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (dynamic quantisation)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check (not recommended)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import ConfigError
    from ..export.onnx import export_onnx, require_onnx
    from ..models import load_model

    require_onnx()  # before loading weights: say what to install first
    if args.image_size is not None and args.image_size < 1:
        raise ConfigError(f"--image-size must be at least 1, got {args.image_size}")
    model = load_model(args.weights)
    t0 = time.perf_counter()
    result = export_onnx(model, args.out, image_size=args.image_size, opset=args.opset, dynamic=args.dynamic,
                         fp16=args.fp16, int8=args.int8, verify_export=not args.no_verify, force=args.force)
    outputs = ", ".join(__import__("json").loads(result.metadata["dinolab.outputs"]))
    shape = "B x C x H x W (H, W multiples of " + str(model.patch_size) + ")" if args.dynamic else "B x C x fixed size"
    print(f"exported {args.weights} in {time.perf_counter() - t0:.1f} s: pixel_values {shape} -> {outputs}")
    if result.checks:
        print("ONNX Runtime check against dinolab:")
        print(result.report())
    for variant, path in result.paths.items():
        print(f"wrote {variant} {path}")
    return 0
