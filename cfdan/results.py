"""The run store: one JSON record (+ an ``.npz`` of arrays) per training run.

Layout::

    results/<experiment>/<run_id>.json   config, seed, provenance, per-epoch history, metrics
    results/<experiment>/<run_id>.npz    confusion matrices, test logits, t-SNE features (Fig. 7),
                                         attention maps of fixed test images (Fig. 8)

``run_id`` is a short hash of the resolved configuration (the seed included), so a sweep can
skip runs that are already in the store. Writes are atomic (:mod:`cfdan.atomic`). The store's
root is :func:`cfdan.paths.results_dir`; checkpoints are not part of the store, they live in
:func:`cfdan.paths.checkpoint_dir`. :func:`build_record` lays out the record of a training run.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdan import atomic, paths

DEFAULT_METRICS = (
    "test.accuracy",
    "test.mean_class_accuracy",
    "test.macro_f1",
    "val.accuracy",
    "val.mean_class_accuracy",
)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``NaN``)."""
    text = json.dumps(obj, indent=1, sort_keys=False, default=_json_default)
    atomic.write_text(path, text + "\n")


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write a compressed ``.npz`` of ``arrays``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic.write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- records
SCHEMA_VERSION = 1
SELECTION = "best val accuracy, ties broken by lower val loss"
"""How a run selects its checkpoint (§4.3): on val only; the test split is evaluated once."""


def build_record(
    cfg: Any,
    *,
    provenance: Mapping[str, Any],
    data: Mapping[str, Any],
    model_info: Mapping[str, Any],
    history: list[dict[str, Any]],
    epochs_fitted: int,
    stop_reason: str,
    best_epoch: int,
    metrics: Mapping[str, Any],
    train_time_s: float,
    wall_time_s: float,
    resumed_at_epochs: list[int],
    checkpoint: str,
) -> dict[str, Any]:
    """The record of one training run of ``cfg`` (a :class:`cfdan.training.config.Config`).

    ``provenance`` holds ``git`` (at the start of the run), ``hardware``, ``versions`` and
    ``peak_memory`` (:mod:`cfdan.training.provenance`); ``data`` the dataset, label mode, fingerprints,
    sizes, class names and load time; ``metrics`` the selected checkpoint's ``val``, ``test``
    and ``train_subset`` metrics. ``stop_reason`` is ``completed``, ``time_budget`` (stopped
    early) or ``time_budget_fitted`` (schedule shortened after epoch 1); the run is cut short
    unless it is ``completed``. ``epochs_planned`` (the config's), ``epochs_fitted`` (after a
    refit), ``epochs_run`` and ``schedule_refitted`` say how much of the planned schedule ran.
    """
    return {
        "schema": SCHEMA_VERSION,
        "experiment": cfg.experiment,
        "run_id": cfg.run_id,
        "variant": cfg.variant or cfg.model.get("preset"),
        "profile": cfg.profile,
        "seed": cfg.train.seed,
        "config": cfg.to_dict(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": provenance["git"],
        "hardware": provenance["hardware"],
        "versions": provenance["versions"],
        "data": dict(data),
        "model_info": dict(model_info),
        "history": history,
        "epochs_planned": cfg.train.epochs,
        "epochs_fitted": epochs_fitted,
        "epochs_run": len(history),
        "schedule_refitted": epochs_fitted < cfg.train.epochs,
        "cut_short": stop_reason != "completed",
        "stop_reason": stop_reason,
        "selection": SELECTION,
        "best_epoch": best_epoch,
        "val": metrics["val"],
        "test": metrics["test"],
        "train_subset": metrics["train_subset"],
        "train_time_s": train_time_s,
        "wall_time_s": wall_time_s,
        "resumed_at_epochs": resumed_at_epochs,
        "peak_memory": provenance["peak_memory"],
        "checkpoint": checkpoint,
    }


def record_path(experiment: str, run_id: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the JSON record of ``run_id`` in ``experiment``."""
    _check_name(experiment, "experiment")
    _check_name(run_id, "run_id")
    return paths.results_dir(root) / experiment / f"{run_id}.json"


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith(".") or "\\" in name:
        raise ValueError(f"invalid {what} name {name!r}: no slashes, not empty, no leading dot")


def save_record(
    record: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """Store ``record`` (must hold ``experiment`` and ``run_id``) and its arrays; return the JSON path.

    The ``.npz`` is written first so that a record on disk always has its arrays beside it.
    """
    path = record_path(record["experiment"], record["run_id"], root)
    if arrays:
        _write_npz(path.with_suffix(".npz"), arrays)
    _write_json(path, dict(record))
    return path


def add_note(json_path: str | os.PathLike, note: str, **flags: Any) -> bool:
    """Append ``note`` to a stored record's ``provenance_note`` and set descriptive ``flags``
    that it lacks (never an outcome field, never one it has); False if the note is there."""
    path = Path(json_path)
    rec = read_record(path)
    old = rec.get("provenance_note") or ""
    if note in old:
        return False
    outcome = {"val", "test", "train_subset", "history", "best_epoch", "config", "run_id"}
    for k, v in flags.items():
        if k in outcome or k in rec:
            raise ValueError(f"{path}: add_note may not set {k!r} (an outcome or existing field)")
        rec[k] = v
    rec["provenance_note"] = f"{old} | {note}" if old else note
    _write_json(path, rec)
    return True


def drop_arrays(json_path: str | os.PathLike, keys: Iterable[str], note: str) -> list[str]:
    """Remove ``keys`` from a stored record's ``.npz`` and append ``note`` to its
    ``provenance_note``; returns the keys removed (nothing is written if none was there).

    For amending records after the fact (e.g. pixels that must not be stored); the outcome
    fields are never touched.
    """
    path = Path(json_path)
    npz = path.with_suffix(".npz")
    if not npz.is_file():
        return []
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    gone = [k for k in keys if k in arrays]
    if not gone:
        return []
    rec = read_record(path)
    old = rec.get("provenance_note")
    rec["provenance_note"] = f"{old} | {note}" if old else note
    _write_npz(npz, {k: v for k, v in arrays.items() if k not in gone})
    _write_json(path, rec)
    return gone


def has_record(experiment: str, run_id: str, root: str | os.PathLike | None = None) -> bool:
    """Whether the store already holds ``run_id`` under ``experiment``."""
    return record_path(experiment, run_id, root).is_file()


def read_record(path: str | os.PathLike) -> dict:
    """Read one JSON record; a broken file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a valid JSON record ({exc})") from exc


def iter_records(
    experiment: str | None = None, root: str | os.PathLike | None = None,
    superseded: bool = False,
) -> Iterable[tuple[Path, dict]]:
    """Yield ``(path, record)`` for every record of ``experiment`` (all experiments if None).

    A record marked ``superseded_by`` (a later run of the same profile and seed that replaces
    it, set with :func:`add_note`) is left out unless ``superseded``: tables and figures show
    its successor, while provenance and speed tables and lookups by run id still see it.
    """
    base = paths.results_dir(root)
    if not base.is_dir():
        return
    dirs = [base / experiment] if experiment else sorted(p for p in base.iterdir() if p.is_dir())
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.json")):
            if p.name.startswith("."):
                continue
            rec = read_record(p)
            if "run_id" not in rec or "experiment" not in rec:  # other JSON (e.g. data/ stats)
                continue
            if superseded or not rec.get("superseded_by"):
                yield p, rec


def get_record(
    run_id: str, experiment: str | None = None, root: str | os.PathLike | None = None
) -> dict:
    """The record of ``run_id`` (searched in all experiments when ``experiment`` is None)."""
    for _path, rec in iter_records(experiment, root, superseded=True):
        if rec.get("run_id") == run_id:
            return rec
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    raise KeyError(f"no run {run_id!r} in {where} under {paths.results_dir(root)}")


# --------------------------------------------------------------------------- tidy tables
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (lists stay as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_SCALAR_METRICS_SKIP = {"confusion", "per_class", "class_names"}


def record_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One tidy row: run meta, flattened config (``model.preset`` ...) and scalar metrics."""
    row: dict[str, Any] = {
        "experiment": rec.get("experiment"),
        "run_id": rec.get("run_id"),
        "variant": rec.get("variant"),
        "seed": rec.get("seed"),
        "date": rec.get("date"),
        "git_commit": (rec.get("git") or {}).get("commit"),
        "git_dirty": (rec.get("git") or {}).get("dirty"),
        "code_commit": rec.get("code_commit"),
        "device": (rec.get("hardware") or {}).get("device"),
        "wall_time_s": rec.get("wall_time_s"),
        "epochs_run": rec.get("epochs_run"),
        "cut_short": rec.get("cut_short"),
        "best_epoch": rec.get("best_epoch"),
        "data_fingerprint": (rec.get("data") or {}).get("fingerprint"),
        "params": (rec.get("model_info") or {}).get("params"),
        "superseded_by": rec.get("superseded_by"),
    }
    row.update(flatten(rec.get("config", {})))
    for split in ("val", "test"):
        metrics = rec.get(split) or {}
        for k, v in metrics.items():
            if k.endswith("_ci95") and isinstance(v, list) and len(v) == 2:
                row[f"{split}.{k}"] = tuple(v)  # a bootstrap interval, kept as one cell
                continue
            if k in _SCALAR_METRICS_SKIP or isinstance(v, (list, dict)):
                continue
            row[f"{split}.{k}"] = v
        for cname, stats in (metrics.get("per_class") or {}).items():
            for sk, sv in stats.items():
                row[f"{split}.per_class.{cname}.{sk}"] = sv
    return row


def _match_column(columns: Iterable[str], key: str) -> str:
    cols = list(columns)
    if key in cols:
        return key
    dotted = key.replace("__", ".")
    if dotted in cols:
        return dotted
    ends = [c for c in cols if c.endswith("." + key) or c.endswith("." + dotted)]
    if len(ends) == 1:
        return ends[0]
    if len(ends) > 1:
        raise KeyError(f"filter {key!r} is ambiguous: matches {ends}")
    raise KeyError(f"filter {key!r} matches no column; columns: {sorted(cols)}")


def load(
    experiment: str | None = None,
    root: str | os.PathLike | None = None,
    superseded: bool = False,
    **filters: Any,
):
    """All runs as a tidy :class:`pandas.DataFrame`, one row per run.

    Columns: run meta (``run_id``, ``variant``, ``seed``, ...), the flattened config
    (``model.preset``, ``train.lr``, ...) and scalar metrics (``test.accuracy``, ...).
    ``filters`` keep rows whose column equals the value (a list/tuple means "one of");
    a key may be a column name, a ``__`` spelling of a dotted name (``model__preset``) or an
    unambiguous last component (``preset``). Records marked ``superseded_by`` are left out
    unless ``superseded`` (:func:`iter_records`).
    """
    import pandas as pd

    rows = [record_row(rec) for _p, rec in iter_records(experiment, root, superseded)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for key, value in filters.items():
        col = _match_column(df.columns, key)
        if isinstance(value, (list, tuple, set)):
            df = df[df[col].isin(list(value))]
        else:
            df = df[df[col] == value]
    return df.reset_index(drop=True)


def summarize(df, by: list[str] | str | None = None, metrics: Iterable[str] | None = None):
    """Mean, std and n over seeds of ``metrics`` (default: accuracies), grouped by ``by``.

    ``by`` defaults to ``["variant"]``. Returns a DataFrame with columns
    ``<metric>.mean``, ``<metric>.std``, ``n``.
    """
    import pandas as pd

    if isinstance(by, str):
        by = [by]
    by = list(by or ["variant"])
    metrics = [m for m in (metrics or DEFAULT_METRICS) if m in df.columns]
    if df.empty or not metrics:
        return pd.DataFrame(columns=[*by, "n"])
    keys = [_match_column(df.columns, b) for b in by]
    g = df.groupby(keys, dropna=False, sort=True)
    out = g[metrics].agg(["mean", "std"])
    out.columns = [f"{m}.{s}" for m, s in out.columns]
    out["n"] = g.size()
    return out.reset_index()


def load_arrays(
    run_id: str, experiment: str | None = None, root: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of a run (confusion, test_logits, tsne_features, attention_* ...)."""
    for path, rec in iter_records(experiment, root, superseded=True):
        if rec.get("run_id") == run_id:
            npz = path.with_suffix(".npz")
            if not npz.is_file():
                raise FileNotFoundError(f"{npz}: arrays of run {run_id} are missing")
            with np.load(npz, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    raise KeyError(f"no run {run_id!r} under {paths.results_dir(root)}")


def load_history(
    run_id: str | None = None,
    experiment: str | None = None,
    root: str | os.PathLike | None = None,
):
    """Per-epoch history as a DataFrame (columns ``run_id``, ``epoch``, ``train_loss`` ...).

    With ``run_id`` None, the histories of all runs of ``experiment`` are concatenated.
    """
    import pandas as pd

    frames = []
    for _p, rec in iter_records(experiment, root, superseded=run_id is not None):
        if run_id is not None and rec.get("run_id") != run_id:
            continue
        h = pd.DataFrame(rec.get("history", []))
        h.insert(0, "run_id", rec.get("run_id"))
        h.insert(1, "variant", rec.get("variant"))
        h.insert(2, "seed", rec.get("seed"))
        frames.append(h)
    if run_id is not None and not frames:
        raise KeyError(f"no run {run_id!r} under {paths.results_dir(root)}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
