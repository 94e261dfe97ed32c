"""``prepare`` and ``data {check,pack}`` subcommands, added to the CLI by :func:`register`.

``python -m cfdan data check --dataset NAME --root PATH``: split sizes and class counts.
``--record FILE`` also writes the counts as JSON (atomic write).
``python -m cfdan data pack --root PATH --out FILE``: the one-file FERPlus pack (:mod:`.pack`).
``python -m cfdan prepare --dataset NAME --src RAW --dst OUT``: MTCNN detection + alignment
(:mod:`.align`).

A bad dataset raises :class:`~cfdan.data.DataError` (its message names the file and the problem);
the CLI (:func:`cfdan.cli.main`) turns it into a one-line error with exit status 2. Other
failures (a missing optional package, an unwritable folder) end with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cfdan import paths
from cfdan.atomic import write_text
from cfdan.data.types import LABEL_MODES, SPLITS, DataError

EXIT_FAILURE = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``data`` (``check``, ``pack``) to an argparse subparsers object."""
    from cfdan.data import DATASETS

    p = subparsers.add_parser(
        "prepare", help="detect and align faces with MTCNN (§4.2)",
        description="Detect faces with MTCNN, align them by their 5 landmarks to a canonical "
        "template and write crops to DST (resumable; a manifest lists faces not found).")
    p.add_argument("--dataset", default="folder",
                   help="dataset whose raw layout SRC has (rafdb, affectnet) or 'folder' for "
                   "any folder of images")
    p.add_argument("--src", required=True, help="raw images (folder)")
    p.add_argument("--dst", required=True, help="output folder for aligned crops")
    p.add_argument("--size", type=int, default=112, help="side of the aligned crop in pixels")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    data = subparsers.add_parser("data", help="check or pack a dataset (§4.1)",
                                 description="Inspect and pack datasets.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    c = dsub.add_parser("check", help="print split sizes and class counts",
                        description="Load every split (decoding into the cache once) and print "
                        "its size and class counts; exit 2 with the reason on a bad layout.")
    c.add_argument("--dataset", required=True, choices=DATASETS)
    c.add_argument("--root", default=None, help="dataset folder or FERPlus pack "
                   "(FERPlus default: $CFDAN_FERPLUS_ROOT or ../shared/data/ferplus)")
    c.add_argument("--label-mode", default="majority", choices=LABEL_MODES)
    c.add_argument("--cache-dir", default=None)
    c.add_argument("--record", default=None, metavar="FILE",
                   help="also write the counts as JSON to FILE")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=cmd_check)

    k = dsub.add_parser("pack", help="pack FERPlus into one lossless file",
                        description="Pack the majority-vote FERPlus images of the three splits "
                        "losslessly into one .npz (readable with numpy only).")
    k.add_argument("--root", default=None, help="FERPlus folder in the FER+ layout")
    k.add_argument("--out", required=True, help="output file (.npz)")
    k.add_argument("--include-soft", action="store_true",
                   help="also pack the extra training images of the soft label modes")
    k.add_argument("--preset", type=int, default=6, help="xz preset 0-9")
    k.add_argument("--cache-dir", default=None)
    k.add_argument("--no-verify", action="store_true",
                   help="skip re-reading the pack and comparing it with the folder")
    k.set_defaults(func=cmd_pack)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_FAILURE


def check(dataset: str, root: str | None, label_mode: str = "majority",
          cache_dir: str | None = None) -> dict:
    """Sizes, class counts and fingerprints of every split (raises :class:`DataError`)."""
    from cfdan.data import load_dataset

    out: dict = {"dataset": dataset, "label_mode": label_mode, "splits": {}}
    for split in SPLITS:
        ds = load_dataset(dataset, root, split, label_mode=label_mode, cache_dir=cache_dir)
        out["class_names"] = list(ds.class_names)
        out["splits"][split] = {
            "images": len(ds),
            "class_counts": ds.class_counts(),
            "image_shape": list(ds.images.shape[1:]),
            "fingerprint": ds.fingerprint,
        }
    return out


def cmd_check(args: argparse.Namespace) -> int:
    try:
        summary = check(args.dataset, args.root, args.label_mode, args.cache_dir)
    except (ValueError, OSError) as exc:
        return _fail(exc)
    if args.record:
        write_text(args.record, json.dumps(summary, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    names = summary["class_names"]
    width = max(len(n) for n in [*names, "images"]) + 1
    print(f"{summary['dataset']} ({summary['label_mode']})")
    print("".ljust(width) + "".join(s.rjust(8) for s in SPLITS))
    print("images".ljust(width)
          + "".join(str(summary["splits"][s]["images"]).rjust(8) for s in SPLITS))
    for n in names:
        print(n.ljust(width)
              + "".join(str(summary["splits"][s]["class_counts"][n]).rjust(8) for s in SPLITS))
    for s in SPLITS:
        sp = summary["splits"][s]
        print(f"{s}: image shape {tuple(sp['image_shape'])}, fingerprint {sp['fingerprint']}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from cfdan.data import load_dataset, pack

    root = paths.ferplus_root(args.root)
    try:
        t0 = time.perf_counter()
        pack.pack(root, args.out, include_soft=args.include_soft, preset=args.preset,
                  cache_dir=args.cache_dir)
        t_pack = time.perf_counter() - t0
        size = Path(args.out).stat().st_size
        print(f"wrote {args.out}: {size / 1e6:.1f} MB in {t_pack:.0f} s")
        if not args.no_verify:
            modes = ["majority", "crossentropy"] if args.include_soft else ["majority"]
            t0 = time.perf_counter()
            for mode in modes:
                for split in SPLITS:
                    a = load_dataset("ferplus", args.out, split, label_mode=mode)
                    b = load_dataset("ferplus", root, split, label_mode=mode,
                                     cache_dir=args.cache_dir)
                    problem = compare(a, b)
                    if problem:
                        raise DataError(f"{args.out}: {split}/{mode} differs from {root}: "
                                        f"{problem}")
            print(f"verified: the pack equals the folder ({', '.join(modes)}; "
                  f"{time.perf_counter() - t0:.1f} s)")
    except (ValueError, OSError) as exc:
        return _fail(exc)
    return 0


def compare(a, b) -> str:
    """'' when two :class:`FaceTensors` hold the same data, else what differs."""
    import torch

    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} images"
    if not torch.equal(a.images, b.images):
        return "pixels differ"
    if not torch.equal(a.labels, b.labels):
        return "labels differ"
    if (a.soft is None) != (b.soft is None) or (a.soft is not None
                                                  and not torch.equal(a.soft, b.soft)):
        return "soft targets differ"
    if a.ids != b.ids or a.class_names != b.class_names:
        return "names or class names differ"
    if a.fingerprint != b.fingerprint:
        return f"fingerprint {a.fingerprint} vs {b.fingerprint}"
    return ""


def cmd_prepare(args: argparse.Namespace) -> int:
    try:
        from cfdan.data import align

        report = align.prepare(args.dataset, args.src, args.dst, size=args.size,
                               device=args.device, progress=not args.quiet)
    except (ValueError, OSError, ImportError) as exc:
        return _fail(exc)
    print(f"aligned {report['aligned']}, no face found {report['no_face']} (kept as centre "
          f"crops, listed in {report['manifest']}), skipped (done) {report['skipped']}")
    return 0
