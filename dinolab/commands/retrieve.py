"""Retrieval mAP / recall@k of a query set against a database, or copy detection on edited copies.

Retrieval: every --query image ranks the --database by cosine similarity of CLS features; database
images of the query's class (class subfolders, matched by name) are its positives. Prints mAP,
recall@k (share of queries with a positive in the top k) and precision@k; --out adds each query's
AP and top matches.
Copy detection (--copy-detection DIR, DINO's Copydays protocol on your images): each image gets
edited copies (strong crops, JPEG, colour, blur, overlays, all combined) that must find it among
the originals and optional --distractors; descriptor = CLS + GeM(p=4) of the patch tokens.
Examples:
  dinolab retrieve dinov2_vits14.pth --query data/query --database data/db --ks 1 5 10
  dinolab retrieve --query-embeddings q.npz --database-embeddings db.npz --out retrieval.json
  dinolab retrieve dino_vitb8.pth --copy-detection photos/ --distractors other_photos/ --image-size 320
"""

from __future__ import annotations

import argparse

from ._evalio import add_embed_arguments, add_output_arguments, add_split_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser, [("query", "labelled query images"), ("database", "labelled database images")])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], metavar="K",
                        help="cut-offs for recall@k and precision@k (default 1 5 10)")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="top matches per query in --out (default 10)")
    c = parser.add_argument_group("copy detection")
    c.add_argument("--copy-detection", metavar="DIR", help="images to make edited copies of (needs WEIGHTS)")
    c.add_argument("--distractors", metavar="DIR", help="extra database images that are copies of nothing")
    c.add_argument("--augmentations", type=int, default=6, metavar="N",
                   help="edited copies per image, cycling through --kinds (default 6)")
    c.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                   help="edits to use: crop jpeg colour blur overlay strong (default all)")
    c.add_argument("--gem-p", type=float, default=4.0, metavar="P", help="GeM exponent (default 4)")
    c.add_argument("--seed", type=int, default=0)
    add_embed_arguments(parser)
    add_output_arguments(parser)


def _copy_detection(args, splits) -> int:
    from ..errors import ConfigError
    from ..eval.retrieval import COPY_KINDS, copy_detection_eval
    from ._evalio import pct, table, write_json

    if splits.has("query") or splits.has("database"):
        raise ConfigError("--copy-detection builds its own queries and database; drop --query/--database")
    o, model = splits.options, splits.model()  # loading the model sets splits.preprocess
    res = copy_detection_eval(model, args.copy_detection, args.augmentations,
                              kinds=args.kinds or COPY_KINDS, distractors=args.distractors,
                              preprocess=splits.preprocess, batch_size=o.batch_size, gem_p=args.gem_p, ks=args.ks,
                              device=o.device, precision=o.precision, seed=args.seed, progress=o.progress)
    print(f"copy detection: {res['n_queries']} edited copies of {res['n_originals']} images, database of "
          f"{res['n_originals'] + res['n_distractors']} ({res['n_distractors']} distractors), "
          f"CLS + GeM(p={args.gem_p:g})")
    ks = list(res["recall@k"])
    rows = [(kind, v["n_queries"], pct(v["mAP"]), *(pct(v["recall@k"][k]) for k in ks))
            for kind, v in res["per_kind"].items()]
    rows.append(("all", res["n_queries"], pct(res["mAP"]), *(pct(res["recall@k"][k]) for k in ks)))
    print(table(["edit", "queries", "mAP %", *(f"R@{k} %" for k in ks)], rows))
    for path, reason in res["bad"][:10]:
        print(f"skipped {path}: {reason}")
    write_json(args, {"command": "retrieve", "mode": "copy_detection", "gem_p": args.gem_p, **res,
                      "bad": [list(b) for b in res["bad"]]})
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval.retrieval import retrieval_metrics
    from ._evalio import SplitLoader, align_labels, check_out, pct, table, write_json

    if min(args.ks) < 1 or args.top < 0:
        raise ConfigError("--ks must be positive and --top 0 or more")
    check_out(args)
    splits = SplitLoader(args, "retrieve")
    if args.copy_detection:
        return _copy_detection(args, splits)
    if not (splits.has("query") and splits.has("database")):
        raise ConfigError("give --query and --database (folders or --*-embeddings), or --copy-detection DIR")
    query, db = splits.load("query"), splits.load("database")
    q_labels = align_labels(db, query, "--query", allow_missing=True)
    res = retrieval_metrics(query.cls, db.cls, q_labels, db.labels, ks=args.ks, top=args.top)
    print(f"retrieval of {len(query)} queries in a database of {len(db)} images, {db.dim}-d features")
    ks = list(res["recall@k"])
    print(table(["mAP %", *(f"R@{k} %" for k in ks), *(f"P@{k} %" for k in ks)],
                [(pct(res["mAP"]), *(pct(res["recall@k"][k]) for k in ks), *(pct(res["precision@k"][k]) for k in ks))]))
    if res["n_without_positives"]:
        print(f"note: {res['n_without_positives']} queries have no image of their class in the database and are "
              f"left out of the scores")
    per_query = [{"path": p, "ap": ap, "top": [db.paths[j] for j in res["neighbours"][i]] if args.top else []}
                 for i, (p, ap) in enumerate(zip(query.paths, res["ap"]))]
    write_json(args, {"command": "retrieve", "mode": "retrieval", "n_queries": len(query), "n_database": len(db),
                      "mAP": res["mAP"], "recall@k": res["recall@k"], "precision@k": res["precision@k"],
                      "n_without_positives": res["n_without_positives"], "queries": per_query})
    return 0
