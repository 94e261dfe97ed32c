"""The run store: one JSON record (+ an ``.npz`` of arrays) per training run.

Layout::

    results/<experiment>/<run_id>.json   config, seed, provenance, per-epoch history, metrics
    results/<experiment>/<run_id>.npz    confusion matrices, test logits, t-SNE features (Fig. 7),
                                         attention maps of fixed test images (Fig. 8)

``run_id`` is a short hash of the resolved configuration (the seed included), so a sweep can
skip runs that are already in the store. Writes are atomic (temp file + ``os.replace``).
Checkpoints are not part of the store; they live in :data:`cfdan.paths.CHECKPOINT_DIR`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdan import paths

DEFAULT_METRICS = (
    "test.accuracy",
    "test.mean_class_accuracy",
    "test.macro_f1",
    "val.accuracy",
    "val.mean_class_accuracy",
)


def results_dir(root: str | os.PathLike | None = None) -> Path:
    """The store root: ``root``, else ``$CFDAN_RESULTS_DIR``, else :data:`cfdan.paths.RESULTS_DIR`.

    The environment is read at call time so that tests and scripts can redirect the store.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get("CFDAN_RESULTS_DIR")
    return Path(env) if env else paths.RESULTS_DIR


def checkpoint_dir(root: str | os.PathLike | None = None) -> Path:
    """Checkpoint root: ``root``, else ``$CFDAN_CHECKPOINT_DIR``, else ``paths.CHECKPOINT_DIR``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("CFDAN_CHECKPOINT_DIR")
    return Path(env) if env else paths.CHECKPOINT_DIR


# --------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``NaN``)."""
    text = json.dumps(obj, indent=1, sort_keys=False, default=_json_default)
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write a compressed ``.npz`` of ``arrays``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- records
def record_path(experiment: str, run_id: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the JSON record of ``run_id`` in ``experiment``."""
    _check_name(experiment, "experiment")
    _check_name(run_id, "run_id")
    return results_dir(root) / experiment / f"{run_id}.json"


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
        atomic_write_npz(path.with_suffix(".npz"), arrays)
    atomic_write_json(path, dict(record))
    return path


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
    experiment: str | None = None, root: str | os.PathLike | None = None
) -> Iterable[tuple[Path, dict]]:
    """Yield ``(path, record)`` for every record of ``experiment`` (all experiments if None)."""
    base = results_dir(root)
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
            if "run_id" in rec and "experiment" in rec:  # other JSON (e.g. data/ stats) is skipped
                yield p, rec


def get_record(
    run_id: str, experiment: str | None = None, root: str | os.PathLike | None = None
) -> dict:
    """The record of ``run_id`` (searched in all experiments when ``experiment`` is None)."""
    for _path, rec in iter_records(experiment, root):
        if rec.get("run_id") == run_id:
            return rec
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    raise KeyError(f"no run {run_id!r} in {where} under {results_dir(root)}")


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
        "device": (rec.get("hardware") or {}).get("device"),
        "wall_time_s": rec.get("wall_time_s"),
        "epochs_run": rec.get("epochs_run"),
        "cut_short": rec.get("cut_short"),
        "best_epoch": rec.get("best_epoch"),
        "data_fingerprint": (rec.get("data") or {}).get("fingerprint"),
        "params": (rec.get("model_info") or {}).get("params"),
    }
    row.update(flatten(rec.get("config", {})))
    for split in ("val", "test"):
        metrics = rec.get(split) or {}
        for k, v in metrics.items():
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
    **filters: Any,
):
    """All runs as a tidy :class:`pandas.DataFrame`, one row per run.

    Columns: run meta (``run_id``, ``variant``, ``seed``, ...), the flattened config
    (``model.preset``, ``train.lr``, ...) and scalar metrics (``test.accuracy``, ...).
    ``filters`` keep rows whose column equals the value (a list/tuple means "one of");
    a key may be a column name, a ``__`` spelling of a dotted name (``model__preset``) or an
    unambiguous last component (``preset``).
    """
    import pandas as pd

    rows = [record_row(rec) for _p, rec in iter_records(experiment, root)]
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
    for path, rec in iter_records(experiment, root):
        if rec.get("run_id") == run_id:
            npz = path.with_suffix(".npz")
            if not npz.is_file():
                raise FileNotFoundError(f"{npz}: arrays of run {run_id} are missing")
            with np.load(npz, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    raise KeyError(f"no run {run_id!r} under {results_dir(root)}")


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
    for _p, rec in iter_records(experiment, root):
        if run_id is not None and rec.get("run_id") != run_id:
            continue
        h = pd.DataFrame(rec.get("history", []))
        h.insert(0, "run_id", rec.get("run_id"))
        h.insert(1, "variant", rec.get("variant"))
        h.insert(2, "seed", rec.get("seed"))
        frames.append(h)
    if run_id is not None and not frames:
        raise KeyError(f"no run {run_id!r} under {results_dir(root)}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
