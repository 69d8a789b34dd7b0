"""Few-shot classification: k labelled images per class over random episodes, mean with a 95 percent interval.

Each episode draws k support images per class from DATA, fits the classifier (nearest centroid,
i.e. prototypes, by default; weighted k-NN or logistic regression on request) and classifies the
other images of DATA, or all of --query when given. For every k it prints the mean accuracy,
balanced accuracy and macro-F1 over episodes with a Student-t 95% interval, then each class's
mean recall per k, and names the classes left out for having too few images (k + 1 are needed,
k with a separate query set); a row's scores are over the classes in its episodes.
Examples:
  dinolab fewshot dinov2_vits14.pth data/labelled --shots 1 5 10 --episodes 100
  dinolab fewshot --embeddings labelled.npz --classifier knn --out fewshot.json
"""

from __future__ import annotations

import argparse

from ._evalio import add_embed_arguments, add_output_arguments, add_save_argument, add_split_arguments, add_weights_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_argument(parser)
    parser.add_argument("data", nargs="?", metavar="DATA",
                        help="labelled images: a class-per-subfolder folder, .txt list or builtin:NAME")
    parser.add_argument("--embeddings", dest="data_embeddings", metavar="FILE.npz",
                        help="DATA as precomputed embeddings from `dinolab embed` (labelled)")
    add_split_arguments(parser, [("query", "optional separate labelled query set")], weights=False)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], metavar="K",
                        help="support images per class (default 1 5 10)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per k (default 100)")
    parser.add_argument("--classifier", choices=["centroid", "knn", "logreg"], default="centroid",
                        help="nearest centroid (default), weighted k-NN (k 20, T 0.07) or logistic regression")
    parser.add_argument("--queries-per-class", type=int, default=None, metavar="Q",
                        help="queries per class and episode (default: all available)")
    parser.add_argument("--seed", type=int, default=0)
    add_save_argument(parser, "the prototype classifier of all of DATA (class means of L2-normalised features, "
                              "cosine; needs --classifier centroid)")
    add_embed_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval.fewshot import few_shot_episodes
    from ._evalio import SplitLoader, align_labels, check_out, check_save, pct, table, write_json

    if args.save and args.classifier != "centroid":
        raise ConfigError(f"--save writes a prototype classifier, which needs --classifier centroid (got "
                          f"{args.classifier}); save a k-NN with `dinolab knn --save`, a logistic regression with "
                          f"`dinolab linear --logreg --save`")
    check_out(args)
    check_save(args)
    splits = SplitLoader(args, "fewshot")
    data = splits.load("data", flags=("DATA", "--embeddings"))
    query = splits.load("query") if splits.has("query") else None
    res = few_shot_episodes(data.cls, data.labels, shots=args.shots, n_episodes=args.episodes,
                            classifier=args.classifier, classes=data.classes, seed=args.seed,
                            n_query=args.queries_per_class,
                            query_feats=None if query is None else query.cls,
                            query_labels=None if query is None else align_labels(data, query, "--query"))
    where = f"queries from {len(query)} --query images" if query is not None else "queries from the rest of DATA"
    print(f"{args.classifier} few-shot on {len(data)} images, {args.episodes} episodes per k, {where}")
    rows = []
    for k, r in res.items():
        n_cls = f"{r['n_classes']} of {r['n_classes'] + len(r['skipped_classes'])}" if r["skipped_classes"] \
            else r["n_classes"]
        if "skipped" in r:
            rows.append((k, n_cls, "-", "-", "-", "-"))
            continue
        acc = r["accuracy"]
        rows.append((k, n_cls, pct(acc["mean"]), "± " + pct(acc["half_width"]),
                     pct(r["balanced_accuracy"]["mean"]), pct(r["macro_f1"]["mean"])))
    print(table(["k", "classes", "accuracy %", "95% CI", "balanced %", "macro-F1 %"], rows))
    scored = [k for k, r in res.items() if "skipped" not in r]
    names = list(dict.fromkeys(n for k in scored for n in res[k]["per_class_recall"]))
    if names:
        print(table(["class"] + [f"k={k} recall %" for k in scored],
                    [[n] + [pct(res[k]["per_class_recall"][n]["mean"]) if n in res[k]["per_class_recall"] else
                            "left out" for k in scored] for n in names], "per-class recall (mean over episodes)"))
    for k, r in res.items():
        if "skipped" in r:
            print(f"note: k={k} skipped: {r['skipped']}")
        if r["skipped_classes"]:
            names = ", ".join(f"{c} ({n})" for c, n in list(r["skipped_classes"].items())[:8])
            print(f"note: k={k}: classes with too few images left out: {names}"
                  f"{' ...' if len(r['skipped_classes']) > 8 else ''}")
    if any(r["skipped_classes"] for r in res.values()):
        print("note: a row with \"N of M\" classes left the others out for too few images; its scores, balanced "
              "accuracy and macro-F1 included, are over those N classes only")
    print("note: 95% CI is the Student-t interval of the mean over episodes")
    _save(args, splits, data)
    write_json(args, {"command": "fewshot", "classifier": args.classifier, "episodes": args.episodes,
                      "n_images": len(data), "n_query_images": None if query is None else len(query),
                      "results": res})
    return 0


def _save(args: argparse.Namespace, splits, data) -> None:
    import torch

    from ..eval.fewshot import class_centroids
    from ..predict.saved import PROTOTYPE_TEMPERATURE
    from ._evalio import save_classifier_from

    n_cls = len(data.classes) if data.classes else int(data.labels.max()) + 1
    centroids, present = class_centroids(data.cls, data.labels, n_cls)
    save_classifier_from(args, splits, data, "prototype", {"centroids": centroids, "present": present.to(torch.uint8)},
                         {"temperature": PROTOTYPE_TEMPERATURE, "n_images": len(data)}, n_cls)

