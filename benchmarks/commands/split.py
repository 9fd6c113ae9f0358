"""``autorec-bench split``: materialise (or reuse) a split and describe it: sizes, cold start, where it is
stored, its content hash and the dataset's (what a run's identity records)."""

from __future__ import annotations

import argparse
import json

HELP = "materialise a train/validation/test split, store it and print its sizes, cold start and sha256"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (e.g. ml-100k, ml-latest-small), synthetic:NU,NI,NR[,SEED] or synthetic:SHAPE@F[,SEED]; "
        "for --split files:..., the name given to the ratings built from the two CSVs",
    )
    p.add_argument(
        "--split",
        default="random",
        metavar="KIND[:ARGS]",
        help="random[:test_ratio=0.1], d2l-random[:test_ratio=0.1], seq-aware, canonical:u1 "
        "(u1..u5, ua, ub; ml-100k only), kfold[:k=5,fold=0], files:TRAIN.csv,TEST.csv "
        "(default: random)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--valid-ratio", type=float, default=0.05, help="share of the train part held out for validation (default 0.05)"
    )
    p.add_argument(
        "--rating-scale", default=None, metavar="LOW,HIGH[,STEP]", help="the scale of a custom (files:) dataset"
    )
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--offline", action="store_true", help="never download; fail if the data is missing")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where splits are stored (default $AUTOREC_CACHE_DIR/splits or ~/.cache/autorec-bench/splits)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def describe(d) -> dict:
    """The facts ``split`` prints, as a dict (also what ``--json`` prints)."""
    sp = d.split
    r = d.ratings
    return {
        "dataset": sp.dataset,
        "n_ratings": len(r),
        "n_users": r.n_users,
        "n_items": r.n_items,
        "rating_scale": list(r.rating_scale),
        "spec": str(sp.spec),
        "kind": sp.spec.kind,
        "args": dict(sp.spec.args),
        "seed": sp.seed,
        "valid_ratio": sp.valid_ratio,
        "sizes": sp.sizes,
        "cold_start": d.cold_start(),
        "path": str(d.path) if d.path is not None else None,
        "sha256": sp.sha256,
        "ratings_sha256": d.ratings_sha256,
    }


def run(args: argparse.Namespace) -> int:
    from autorec.splits import SplitSpec
    from benchmarks.harness.data import DataSource, check_rating_scale, load_data, parse_dataset

    source = DataSource(
        data_dir=args.data_dir,
        offline=args.offline,
        cache_dir=args.cache_dir,
        rating_scale=check_rating_scale(args.rating_scale),
    )
    spec = SplitSpec.parse(args.split)
    d = load_data(parse_dataset(args.dataset), spec, seed=args.seed, valid_ratio=args.valid_ratio, source=source)
    info = describe(d)
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    s, c = info["sizes"], info["cold_start"]
    n = info["n_ratings"]
    argtext = ", ".join(f"{k}={v}" for k, v in info["args"].items()) or "none"
    lo, hi = info["rating_scale"]
    lines = [
        (
            "dataset",
            f"{info['dataset']}: {n} ratings, {info['n_users']} users, {info['n_items']} items, scale {lo:g}..{hi:g}",
        ),
        ("split", info["spec"]),
        ("kind", info["kind"]),
        ("args", argtext),
        ("seed", str(info["seed"])),
        ("valid ratio", f"{info['valid_ratio']:g}"),
        ("train", f"{s['train']:>9}  ({100 * s['train'] / n:.2f}%)"),
        ("valid", f"{s['valid']:>9}  ({100 * s['valid'] / n:.2f}%)"),
        ("test", f"{s['test']:>9}  ({100 * s['test'] / n:.2f}%)"),
        ("cold test pairs", f"{c['pairs']} of {s['test']} (user or item unseen in train)"),
        ("cold test users", f"{c['users']} of {c['test_users']} test users unseen in train"),
        ("cold test items", f"{c['items']} of {c['test_items']} test items unseen in train"),
        ("stored", info["path"] or "-"),
        ("sha256", info["sha256"]),
        ("ratings sha256", info["ratings_sha256"]),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    return 0
