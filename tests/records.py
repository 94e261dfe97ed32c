"""Hand-made records for the analysis tests: one record factory (:func:`record`; :func:`save_run`
stores it as a sweep would), the temporary experiment files (:func:`write_plans`) and their
constants. The ``store`` fixture that uses them is in ``conftest.py``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cfdan import results
from cfdan.training import config

# --------------------------------------------------------------------------- a store of hand-made records
SEEDS = [0, 1, 2, 3, 4]
FIG10_SEEDS = [0, 1, 2]
BASE = [60.0, 70.0, 80.0, 65.0, 75.0]  # per-seed level: a large between-seed spread
TOMLS = {
    "cpu_v2": ("cpu v2: the full model", SEEDS, ["full"]),
    "table3": ("Table 3", SEEDS, ["baseline", "dam", "dam_ilm", "plain_cnn"]),
    "table5": ("Table 5", SEEDS, ["no_distill"]),
    "table4": ("Table 4", SEEDS, [f"act_{a}{s}" for a in ("pcp", "sigmoid", "relu", "tanh")
                                  for s in ("", "_no_ilm") if f"{a}{s}" != "pcp"]),
}
"""The temporary experiment files of the ``store`` fixture (Fig. 10's is written besides)."""

CLASSES = ("neutral", "disgust")
DATE = "2026-01-01T00:00:00+00:00"


def fig10_name(pt: tuple[float, float, float]) -> str:
    return f"sL{pt[0]}_xL{pt[1]}_P1{pt[2]}"


def write_plans(folder: Path) -> Path:
    """Experiment files like configs/experiments/, on the smoke profile."""
    from cfdan.analysis.runs import fig10_points

    folder.mkdir(parents=True, exist_ok=True)
    for name, (desc, seeds, variants) in TOMLS.items():
        lines = [f'description = "{desc}"', 'profile = "smoke"', f"seeds = {seeds}",
                 "", "[variants]"]
        lines += [f'{v} = {{ "model.preset" = "{v}" }}' for v in variants]
        (folder / f"{name}.toml").write_text("\n".join(lines) + "\n")
    lines = ['description = "Fig. 10"', 'profile = "smoke"', f"seeds = {FIG10_SEEDS}", "",
             "[variants]"]
    for pt in fig10_points():
        lines.append(f'"{fig10_name(pt)}" = {{ "model.pcp_s_L" = {pt[0]}, '
                     f'"model.pcp_x_L" = {pt[1]}, "model.pcp_P1" = {pt[2]} }}')
    (folder / "fig10.toml").write_text("\n".join(lines) + "\n")
    return folder


_CONFIGS: dict[tuple[str, str], list[config.Config]] = {}


def run_config(experiment: str, variant: str, seed: int) -> config.Config:
    """The resolved config of one run of the (temporary) experiment file, as a fresh copy; for
    an experiment without a file, the smoke profile with that seed (and preset, if ``variant``
    names one)."""
    key = (str(config.EXPERIMENTS_DIR), experiment)
    if key not in _CONFIGS:
        try:
            _CONFIGS[key] = config.load_experiment(experiment).configs()
        except config.ConfigError:
            _CONFIGS[key] = []
    found = [c for c in _CONFIGS[key] if c.variant == variant and c.seed == seed]
    if found:
        return copy.deepcopy(found[0])
    over: dict[str, Any] = {"train.seed": seed}
    if variant in (config.model_presets() or []):
        over["model.preset"] = variant
    cfg = config.load_config("smoke", over)
    cfg.experiment, cfg.variant = experiment, variant
    return cfg


def record(experiment: str, variant: str = "full", seed: int = 0, acc: float = 70.0, *,
           history: list[float] | None = None, cfg: config.Config | None = None,
           date: str = DATE, planned: int | None = None, fitted: int | None = None,
           cut_short: bool = False, budget: float | None = None, **fields: Any) -> dict:
    """One run's record as a sweep leaves it: test accuracy ``acc`` (%), one history entry per
    validation accuracy in ``history`` (%), the config of the experiment file's run
    (:func:`run_config`, or ``cfg``) and its run id; ``planned`` / ``fitted`` epochs (default
    the config's), ``cut_short``, a ``budget`` (``train.time_budget_s``); ``fields`` replace
    top-level keys (``run_id``, ``hardware``, ``val`` ...)."""
    cfg = cfg or run_config(experiment, variant, seed)
    history = list(history or [])
    planned = cfg.train.epochs if planned is None else planned
    fitted = planned if fitted is None else fitted
    conf = cfg.to_dict()
    if budget is not None:
        conf["train"]["time_budget_s"] = budget
    rec = {
        "experiment": experiment, "run_id": cfg.run_id, "variant": variant, "seed": seed,
        "config": conf, "date": date, "git": {"commit": "abc", "dirty": False},
        "hardware": {"device": "cpu", "cpu": "test cpu", "cpu_count": 2},
        "versions": {"torch": "x", "python": "y"}, "peak_memory": {"host_max_rss_mb": 10.0},
        "data": {"dataset": "ferplus", "fingerprint": {"train": "t", "val": "v", "test": "s"}},
        "epochs_planned": planned, "epochs_fitted": fitted, "epochs_run": len(history),
        "cut_short": cut_short, "stop_reason": "time budget" if cut_short else "completed",
        "wall_time_s": 600.0, "train_time_s": 500.0,
        "best_epoch": len(history) if history else None,
        "history": [{"epoch": e + 1, "val_accuracy": v / 100, "images_per_s": 100.0 + e,
                     "epoch_time_s": 10.0 * (e + 1), "eval_time_s": 1.0}
                    for e, v in enumerate(history)],
        "test": {"accuracy": acc / 100, "mean_class_accuracy": acc / 200,
                 "per_class": {c: {"support": 3 + i, "recall": 0.5, "f1": 0.5}
                               for i, c in enumerate(CLASSES)}},
    }
    rec.update(fields)
    return rec


def save_run(root: Path, experiment: str, variant: str = "full", seed: int = 0,
             acc: float = 70.0, arrays: dict | None = None, **kw: Any) -> dict:
    """Store :func:`record` (and its ``arrays``) under ``root``; return the record."""
    rec = record(experiment, variant, seed, acc, **kw)
    results.save_record(rec, arrays, root=root)
    return rec
