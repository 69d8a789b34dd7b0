"""Video object segmentation: propagate the first frame's object masks through a video (DINO v1's protocol).

FRAMES is a folder of frame images, taken in natural name order (00002.jpg before 00010.jpg; not
recursive), or a video file (needs a decoder: pip install av; animated GIFs need nothing more).
--mask is the first frame's masks: a palette or grey PNG holding each pixel's object index (0 =
background; DAVIS Annotations are such files), or an RGB picture with one colour per object.
Each later frame's labels are voted by the patches of the first frame and of the 7 previous frames
(last-layer patch features, cosine affinity / 0.1 within 12 patches, top 5 sources; see
dinolab.eval.propagation). Writes into DIR one palette PNG per frame named after it (00012.jpg ->
00012.png; a video's frames are numbered 00000, 00001, ...), and propagate_overlay.png (a strip of
frames with their masks). With --ground-truth (a folder of masks named like the frames), prints
and saves to propagate_scores.json the DAVIS scores per object: J (region Jaccard), F (contour
F-measure, tolerance 0.8% of the diagonal) and J&F, over the frames between the first and the last
that have a ground-truth mask, next to the baseline of copying the first mask to every frame.
Frames are fed at a shorter side of --image-size (default: the first frame's own shorter side, at
most 480 px as DINO v1 uses on DAVIS; dense work wants more patches than a model's training size).
An unreadable frame of a folder is named and skipped (no mask; the next frame propagates from the
ones before) and the command exits 2 at the end; a video file that stops decoding stops the command
(its later frames would be misnumbered). Examples:
  dinolab propagate run/teacher_backbone.safetensors davis/JPEGImages/bear --mask davis/Annotations/bear/00000.png --out bear/
  dinolab propagate W.safetensors clip.mp4 --mask first.png --out masks/ --image-size 320
  dinolab propagate W.safetensors frames/ --mask gt/00000.png --ground-truth gt/ --out masks/
"""

from __future__ import annotations

import argparse

OVERLAY_FRAMES = 8
VISUAL = ("image_size", "mean", "std", "device", "precision", "batch_size", "progress")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.options import add_inference_arguments

    parser.add_argument("weights", metavar="WEIGHTS", help="any weights file or folder dinolab.load_model reads")
    parser.add_argument("frames", metavar="FRAMES", help="folder of frame images (name order) or a video file")
    parser.add_argument("--mask", required=True, metavar="FIRST.png", help="object masks of the first frame")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--ground-truth", metavar="DIR", help="folder of true masks named like the frames: score J, F")
    group = add_inference_arguments(parser, only=VISUAL, title="running the model")
    for action in group._group_actions:
        if action.dest == "image_size":
            action.help = ("shorter side of the frames fed to the model, aspect kept (default: the first frame's "
                           "own, at most 480 px as DINO v1 on DAVIS; printed at the start)")
        if action.dest == "batch_size":
            action.help = "frames embedded at once (default 64)"
    parser.add_argument("--n-last-frames", type=int, default=7, metavar="N", help="recent frames in the context (7)")
    parser.add_argument("--radius", type=int, default=12, metavar="R",
                        help="neighbourhood radius in patches (12; 0 = the whole frame)")
    parser.add_argument("--topk", type=int, default=5, metavar="K", help="sources kept per patch (5)")
    parser.add_argument("--temperature", type=float, default=0.1, metavar="T", help="affinity temperature (0.1)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from ..data.video import open_frames, read_mask
    from ..eval.propagation import PropagationSettings
    from ..eval.video import segment_video
    from ._propagate_io import FrameWriter, check_propagate_outputs, print_scores, settings_check
    from ._visual import load_for_inference, report_unreadable

    settings_check(args)
    settings = PropagationSettings(args.n_last_frames, args.radius, args.topk, args.temperature)
    frames = open_frames(args.frames)
    first_mask = read_mask(args.mask)
    out = Path(args.out)
    check_propagate_outputs(out, frames, args.force, args.ground_truth is not None)
    model, device, precision, preprocess = load_for_inference(args, None)
    size_note = "--image-size" if args.image_size else "the default: the first frame's shorter side, at most 480 px"

    def announce(res) -> None:
        tqdm.write(f"propagate: frames fed at {res.work_size[1]}x{res.work_size[0]} px ({res.grid[1]}x{res.grid[0]} "
              f"patches of {model.patch_size} px; {size_note}), mean {list(preprocess.mean)} std "
              f"{list(preprocess.std)}; objects {res.object_ids[1:]}", file=sys.stderr)
        if res.unseen:
            tqdm.write(f"propagate: warning: object(s) {res.unseen} of {args.mask} cover no patch centre at this size and "
                  f"cannot be propagated; give a larger --image-size", file=sys.stderr)

    writer = FrameWriter(out, args.ground_truth, OVERLAY_FRAMES, len(frames.names) if frames.names else None)
    bar = tqdm(frames, total=len(frames.names) if frames.names else None, desc="propagate", unit="frame",
               disable=None if args.progress else True)
    res = segment_video(model, bar, first_mask, preprocess, image_size=args.image_size, device=device,
                        precision=precision, batch_size=args.batch_size, settings=settings, mask_name=args.mask,
                        on_frame=writer.write, on_start=announce)
    bar.close()
    writer.finish(res)
    if args.ground_truth:
        print_scores(writer, res, out)
    report_unreadable(res.bad, len(res.names) + len(res.bad), what="frames")
    print(f"wrote {len(res.names)} mask(s) to {out}")
    return 0
