"""Command line: ``python -m cfdan {train,sweep,evaluate,results,predict,prepare,data}``.

``prepare`` and ``data`` come from :mod:`cfdan.data.commands` (added when it is installed).
Heavy modules (torch, the model, the data pipeline) are imported inside the commands so that
``--help`` is fast and a missing optional package only affects the command that needs it.
The project's own errors end in one line, ``cfdan: error: <message naming the file>``, with
exit status 2 for bad input and 3 for a diverged run (:func:`exit_status`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class CLIError(Exception):
    """A user error reported as ``cfdan: error: ...`` with exit status 2."""


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default=None,
                   help="results store (default: $CFDAN_RESULTS_DIR or results/)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (default: $CFDAN_CHECKPOINT_DIR or checkpoints/)")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=5 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cfdan",
        description="CF-DAN reproduction: train, sweep, evaluate and run the model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train one run of a profile (resumes if interrupted)",
                       description="Train one run; the record goes to results/<experiment>/.")
    p.add_argument("--profile", default="smoke",
                   help="profile name in configs/ (smoke, cpu, paper) or a .toml path")
    _add_set(p)
    p.add_argument("--experiment", default=None, help="store the record under this experiment")
    p.add_argument("--variant", default=None, help="variant label stored in the record")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--force", action="store_true", help="train even if the run is in the store")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--copy-to", default=None, metavar="DIR",
                   help="also copy the finished record (.json + .npz) into DIR/<experiment>/")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and run id, then exit")
    _add_store_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sweep", help="the experiment queue: status, run, or one experiment's runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The experiments of configs/experiments/ as one resumable queue.\n\n"
        "  sweep status [EXPERIMENT ...]       runs done/running/partial/pending, hours left\n"
        "  sweep run EXPERIMENT [...]           work through pending runs in this order\n"
        "  sweep EXPERIMENT [--dry-run]         the same as 'run' for one experiment\n"
        "  sweep EXPERIMENT --print-commands    one shell command per pending run\n\n"
        "Runs already in the store are skipped; a killed run resumes from its last epoch\n"
        "checkpoint (SIGTERM stops a worker cleanly).")
    p.add_argument("words", nargs="+", metavar="ACTION_OR_EXPERIMENT",
                   help="'status', 'run', or experiment names")
    _add_set(p)
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.add_argument("--print-commands", action="store_true",
                   help="print one shell command per pending run (for SLURM, GNU parallel)")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per worker (0 = the profile's / torch's default)")
    p.add_argument("--only", nargs="+", default=[], metavar="RUN_ID",
                   help="run only these run ids")
    p.add_argument("--commit", action="store_true",
                   help="git-commit each finished record (its two files only) as it lands")
    p.add_argument("--seed-major", action="store_true",
                   help="order the runs by seed across all the experiments named (every "
                   "experiment's seed 3 before any seed 4), not experiment by experiment")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--budget-s", type=float, default=0.0, metavar="SECONDS",
                   help="stop every worker after this many seconds; an unfinished run leaves "
                   "no record (0 = no limit)")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="each worker writes its output to DIR/worker_<i>.log")
    p.add_argument("--mixed-hardware", action="store_true",
                   help="also run experiments whose records were made on the other kind of "
                   "device (CPU vs GPU); by default one table is one kind of hardware")
    _add_store_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split",
                       description="Evaluate a saved checkpoint (best.pt or a shipped model) on "
                       "the val or test split of its dataset. Reported numbers come from "
                       "`train`, which tests once with the val-selected checkpoint.")
    p.add_argument("checkpoint", help="checkpoint file written by train (best.pt)")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored image (default: as the checkpoint's "
                   "eval.tta_flip, the protocol its record was tested with)")
    _add_set(p)
    p.add_argument("--json", action="store_true", help="print all metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("results", help="summarise stored runs (mean, std, n over seeds)")
    p.add_argument("experiment", nargs="?", default=None)
    p.add_argument("--by", nargs="+", default=["variant"], help="group-by columns")
    p.add_argument("--results-dir", default=None)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("predict", help="detect faces in a photo and classify their expressions",
                       description="MTCNN finds the faces, CF-DAN classifies each one.")
    p.add_argument("photo", help="image file (jpg, png, ...)")
    p.add_argument("--checkpoint", default=None,
                   help="inference checkpoint (default: the shipped models/cfdan_cpu_ferplus.pt)")
    p.add_argument("--out", default=None, help="write an annotated copy of the photo here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--min-face", type=int, default=20, help="smallest face side in pixels")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a small fp16 inference checkpoint for predict",
                       description="Copy best.pt with fp16 weights (e.g. to "
                       "models/cfdan_cpu_ferplus.pt, the default of `predict`); or, with --onnx "
                       "or --web, write a model as ONNX.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="inference checkpoint (best.pt); or use --best-of")
    p.add_argument("out", help="destination file (a folder with --web)")
    p.add_argument("--best-of", metavar="EXPERIMENT", default=None,
                   help="export the run of EXPERIMENT with the best validation accuracy")
    p.add_argument("--variant", default="full", help="variant for --best-of (default full)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--onnx", action="store_true",
                   help="write the inference model as ONNX instead (logits and the last spatial "
                        "layer's attention map; the shipped model when no checkpoint is given), "
                        "checked against ONNX Runtime")
    p.add_argument("--web", action="store_true",
                   help="write the book's in-browser demo into the folder OUT instead: the model "
                        "as ONNX (the shipped one when no checkpoint is given), MTCNN's three "
                        "nets as ONNX and meta.json, each checked against ONNX Runtime "
                        "(make demo writes book/_extra/_static/demo)")
    _add_store_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("photo-maps", help="a model's Fig. 8 maps over the astronaut photo",
                       description="Store the spatial, channel and fused maps of a checkpoint "
                       "over the largest face of a photo (default scikit-image's astronaut) as "
                       "<experiment>/<run_id>.photo.npz beside the run's record, for chapter 4's "
                       "Fig. 8 over a real face (the machine with the weights makes it).")
    p.add_argument("checkpoint", help="inference checkpoint (best.pt, or an export)")
    p.add_argument("out", help="destination .photo.npz")
    p.add_argument("--photo", default=None, help="image file (default: the astronaut)")
    p.set_defaults(func=cmd_photo_maps)

    try:  # prepare / data subcommands belong to the data package
        from cfdan.data import commands as data_commands
    except ImportError:
        data_commands = None
    if data_commands is not None and hasattr(data_commands, "register"):
        data_commands.register(sub)
    return parser


# --------------------------------------------------------------------------- commands
def _load_cfg(profile: str, overrides: list[str]):
    from cfdan.training.config import load_config

    return load_config(profile, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from cfdan.training import loop as train
    from cfdan.training.config import validate

    cfg = _load_cfg(args.profile, args.overrides)
    if args.experiment:
        cfg.experiment = args.experiment
    if args.variant:
        cfg.variant = args.variant
    if args.quiet:
        cfg.train.progress = False
    validate(cfg)
    if args.print_config:
        print(json.dumps({"experiment": cfg.experiment, "run_id": cfg.run_id,
                          **cfg.to_dict()}, indent=1))
        return 0
    record = train.train(cfg, results_root=args.results_dir, checkpoint_root=args.checkpoint_dir,
                         resume=not args.no_resume, force=args.force)
    if args.copy_to and os.environ.get("RANK", "0") == "0":
        _copy_record(record, args.results_dir, args.copy_to)
    return 0


def _copy_record(record: dict, results_dir: str | None, dest: str) -> None:
    from pathlib import Path

    from cfdan import atomic, results

    src = results.record_path(record["experiment"], record["run_id"], results_dir)
    folder = Path(dest) / record["experiment"]  # same layout as the store: DIR/<experiment>/
    for p in (src, src.with_suffix(".npz")):
        if p.is_file():
            target = folder / p.name
            atomic.write_bytes(target, p.read_bytes())
            print(f"copied {p} -> {target}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from cfdan.training import sweep
    from cfdan.training.config import available_experiments

    action, names = args.words[0], args.words[1:]
    if action not in ("status", "run"):
        action, names = "run", args.words
    if action == "status":
        names = names or available_experiments()
    elif not names:
        raise CLIError("sweep run: name at least one experiment")
    store = {"results_root": args.results_dir, "checkpoint_root": args.checkpoint_dir}
    if action == "status":
        table = sweep.status(names, overrides=args.overrides, **store)
        print(table.to_string(index=False))
        return 0
    if args.print_commands:
        print("\n".join(sweep.commands(names, overrides=args.overrides, **store)))
        return 0
    items = sweep.runs(names, overrides=args.overrides, seed_major=args.seed_major, **store)
    done = sum(r.state == "done" for r in items)
    print(f"experiment {', '.join(names)}: {len(items)} runs ({done} in the store)")
    for r in items:
        epochs = f" ({r.epochs_done} epochs)" if r.state in ("partial", "running") else ""
        print(f"  {r.experiment:<12} {r.run_id}  {r.cfg.variant:<24} seed {r.cfg.seed:<4} "
              f"{r.state}{epochs}")
    if args.dry_run:
        return 0
    deadline = time.time() + args.budget_s if args.budget_s > 0 else None
    sweep.run(names, workers=args.workers, threads=args.threads, overrides=args.overrides,
              commit=args.commit, max_runs=args.max_runs, only=args.only, quiet=args.quiet,
              mixed_hardware=args.mixed_hardware, deadline=deadline, log_dir=args.log_dir,
              seed_major=args.seed_major, **store)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cfdan.predict import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, split=args.split, overrides=args.overrides,
                                  tta_flip=args.tta_flip)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f"protocol: {metrics['protocol']}")
        print(f"{args.split}: n={metrics['n']} accuracy {metrics['accuracy']:.4f} "
              f"mean-class {metrics['mean_class_accuracy']:.4f} macro-F1 {metrics['macro_f1']:.4f}"
              f" loss {metrics['loss']:.4f}")
        for name, s in metrics["per_class"].items():
            print(f"  {name:<10} recall {s['recall']:.3f} f1 {s['f1']:.3f} n={s['support']}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd

    from cfdan import results

    df = results.load(args.experiment, root=args.results_dir)
    if df.empty:
        print("no runs in the store" + (f" for {args.experiment}" if args.experiment else ""))
        return 0
    try:
        table = results.summarize(df, by=args.by)
    except KeyError as exc:
        raise CLIError(str(exc).strip("'\"")) from exc
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cfdan.predict import predict_photo

    faces = predict_photo(args.photo, checkpoint=args.checkpoint, out=args.out,
                          device=args.device, min_face=args.min_face)
    if args.json:
        print(json.dumps(faces, indent=1))
    elif not faces:
        print("no face found")
    for i, f in enumerate(faces if not args.json else []):
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(f["probabilities"].items())[:3])
        print(f"face {i + 1} at {f['box']}: {f['label']} ({top})")
    if args.out and not args.json:
        print(f"annotated image: {args.out}")
    return 0


def cmd_photo_maps(args: argparse.Namespace) -> int:
    from cfdan.analysis import attention_maps

    photo = None
    if args.photo:
        from cfdan.predict import read_photo

        photo = read_photo(args.photo)
    maps = attention_maps.photo_maps(args.checkpoint, photo)
    if maps is None:
        print("error: no face found in the photo", file=sys.stderr)
        return 1
    attention_maps.save_photo_maps(maps, args.out)
    top = int(maps["probs"].argmax())
    print(f"{args.out}: {maps['class_names'][top]} ({float(maps['probs'][top]):.3f}), maps "
          + ", ".join(k for k in attention_maps.PHOTO_MAPS if k in maps))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cfdan import paths
    from cfdan.predict import best_val_record, export_checkpoint

    if args.onnx and args.web:
        raise CLIError("export: --onnx and --web exclude each other")
    if args.onnx or args.web:
        return _export_onnx(args)
    if (args.checkpoint is None) == (args.best_of is None):
        raise CLIError("export: give a checkpoint or --best-of EXPERIMENT (one of them)")
    source = None
    src = args.checkpoint
    if args.best_of:
        rec = best_val_record(args.best_of, args.variant, args.results_dir)
        src = paths.checkpoint_dir(args.checkpoint_dir) / rec["checkpoint"]
        source = {"experiment": rec["experiment"], "run_id": rec["run_id"],
                  "seed": rec["seed"], "val_accuracy": rec["val"]["accuracy"],
                  "chosen": "best validation accuracy of the experiment's runs"}
        print(f"{args.best_of}/{args.variant}: seed {rec['seed']} ({rec['run_id']}) has the best "
              f"val accuracy, {100 * rec['val']['accuracy']:.2f} %")
    path = export_checkpoint(src, args.out, half=not args.fp32, source=source)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from cfdan import onnx_export
    from cfdan.predict import load_checkpoint

    flag = "--web" if args.web else "--onnx"
    if args.best_of:
        raise CLIError(f"export {flag}: give a checkpoint (default: the shipped model), "
                       "not --best-of")
    if args.web:
        web = onnx_export.export_web(args.out, args.checkpoint)
        diffs = web["checks"]["max_abs_diff_onnxruntime_vs_pytorch"]
        worst = max(v for d in diffs.values() for v in d.values())
        total = sum(web["sizes"].values())
        print(f"wrote {', '.join(onnx_export.WEB_FILES)} into {args.out} ({total / 2**20:.1f} "
              f"MiB); ONNX Runtime vs PyTorch, largest |difference| of any output: {worst:.1e}")
        return 0
    model, meta = load_checkpoint(args.checkpoint)
    size = int(meta["image_size"])
    info = onnx_export.export(model, args.out, size)
    diff = ", ".join(f"{k} {v:.1e}" for k, v in info["max_abs_diff"].items())
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB, input "
          f"{size} px); ONNX Runtime vs PyTorch, largest |difference|: {diff}")
    return 0


# --------------------------------------------------------------------------- entry point
def exit_status(exc: BaseException) -> int | None:
    """The exit status of one of the project's own errors; ``None`` for anything else.

    Bad input (a config, a data folder, a file that is not what the command needs) is status 2,
    a diverged training run status 3. Everything else is a bug and keeps its traceback.
    """
    from cfdan.training.config import ConfigError

    if isinstance(exc, (CLIError, ConfigError, FileNotFoundError, IsADirectoryError,
                        NotADirectoryError, PermissionError)):  # DataRootError included
        return EXIT_USAGE
    from cfdan.data.types import DataError
    from cfdan.predict import InputError
    from cfdan.training.loop import NonFiniteLossError

    if isinstance(exc, (DataError, InputError)):
        return EXIT_USAGE
    if isinstance(exc, NonFiniteLossError):
        return EXIT_DIVERGED
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        status = exit_status(exc)
        if status is None:
            raise
        print(f"cfdan: error: {exc}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
