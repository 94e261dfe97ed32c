"""The cpu-profile search of chapter 5: which candidate became the cpu v2 profile, and why.

Every candidate of ``configs/experiments/cpu_search.toml`` is scored on validation accuracy
only (test is never shown), and the best is frozen as cpu v2 (:data:`FROZEN_ROLE`); a plain CNN
is the yardstick. :func:`search_table` lists them, :func:`search_facts` gives the numbers the
chapter's prose quotes, with how the cpu v1 record ended (the reason for the search).
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from cfdan.analysis import book, runs

SEARCH_EXPERIMENT = "cpu_search"
"""The search's experiment (``configs/experiments/cpu_search.toml``)."""

FROZEN_ROLE = "candidate: frozen as cpu v2"
"""The search table's role of the candidate with the best validation accuracy."""


def _rows(experiment: str) -> pd.DataFrame:
    """The rows of the run table of the search, superseded ones left out (every candidate's
    record, of any config: :func:`search_table` matches them to today's by run id)."""
    df = runs.frame()
    return df[(df["experiment"] == experiment) & ~df["superseded"].astype(bool)]


def search_table(experiment: str = SEARCH_EXPERIMENT) -> pd.DataFrame:
    """Every candidate of the cpu-profile search with what it changes, its validation
    accuracy (the selection criterion), train-subset accuracy and time; test is not shown.

    Candidates listed in ``configs/experiments/<experiment>.toml`` without a record of their
    current config are shown as "not run". ``wall min`` is the run's wall time as it ran
    (other jobs may have shared the CPU); ``epoch s (fastest)`` is its fastest epoch,
    training plus validation, the best estimate of an uncontended epoch.
    """
    from cfdan.training.config import load_experiment

    exp = load_experiment(experiment)
    rows = _rows(experiment)
    stored = dict(zip(rows["run_id"], rows["record"], strict=True))
    rows = []
    for cfg in exp.configs():
        changes = exp.variants.get(cfg.variant, {})
        rec = stored.get(cfg.run_id)
        row: dict[str, Any] = {
            "candidate": cfg.variant,
            "role": "yardstick" if cfg.model.get("preset") == "plain_cnn" else "candidate",
            "changes": ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in changes.items())
            or "(common settings only)",
            "epochs": cfg.train.epochs,
        }
        if rec is None:
            row.update({"val acc %": "not run"})
        else:
            hist = rec.get("history", [])
            fastest = min((h["epoch_time_s"] + h.get("eval_time_s", 0.0) for h in hist),
                          default=float("nan"))
            sub = rec.get("train_subset") or {}
            row.update({
                "val acc %": round(100 * rec["val"]["accuracy"], 2),
                "best epoch": rec.get("best_epoch"),
                "train-subset acc %": (round(100 * sub["accuracy"], 2) if sub else None),
                "wall min": round(rec["wall_time_s"] / 60, 1),
                "epoch s (fastest)": round(fastest, 1),
                "threads": rec.get("hardware", {}).get("torch_threads"),
                "commit": str(rec.get("git", {}).get("commit") or "")[:7],
            })
        rows.append(row)
    df = pd.DataFrame(rows, dtype=object).fillna("")
    done = df[(df["role"] == "candidate") & (df["val acc %"] != "not run")]
    if len(done):  # the rule of the search: the best validation accuracy is frozen as cpu v2
        df.loc[done["val acc %"].astype(float).idxmax(), "role"] = FROZEN_ROLE
    return df


def search_facts(experiment: str = SEARCH_EXPERIMENT) -> dict[str, Any]:
    """Counts and the leader of the search, for the chapter's prose (by val accuracy only;
    the plain-CNN yardstick is not a candidate); the uncontended run time of the runs (their
    epochs at their fastest epoch's pace); the yardstick against the candidates; and how the
    cpu v1 record ended (the reason for the search)."""
    table = search_table(experiment)
    ran = table[table["val acc %"] != "not run"]
    t = table[table["role"].str.startswith("candidate")]
    done = t[t["val acc %"] != "not run"]
    out: dict[str, Any] = {"search_candidates": len(t), "search_done": len(done)}
    if len(done):  # search_table marks the leader by validation accuracy as frozen
        best = done[done["role"] == FROZEN_ROLE].iloc[0]
        out.update(search_leader=best["candidate"], search_leader_val=f"{best['val acc %']:.2f}")
    else:
        out.update(search_leader="none yet", search_leader_val="n/a")
    if len(ran):
        idle = ran["epochs"].astype(float) * ran["epoch s (fastest)"].astype(float) / 60
        out.update(search_idle_min_low=float(idle.min()), search_idle_min_high=float(idle.max()))
    yard = ran[ran["role"] == "yardstick"]
    if len(yard) and len(done):
        v = float(yard["val acc %"].iloc[0])
        vals = done["val acc %"].astype(float)
        out.update(search_yardstick_val=f"{v:.2f}",
                   search_yardstick_vs_best=f"{v - float(vals.max()):+.2f}",
                   search_yardstick_beats=int((vals < v).sum()))
        # the candidate that shares the yardstick's training recipe (only the model differs)
        rows = _rows(experiment)
        recipes = dict(zip(rows["variant"], rows["recipe"], strict=True))
        name = yard["candidate"].iloc[0]
        same = done[done["candidate"].map(lambda c: recipes.get(c) == recipes.get(name))]
        if len(same):
            out.update(search_yardstick_recipe=same["candidate"].iloc[0],
                       search_yardstick_vs_same=f"{v - float(same['val acc %'].iloc[0]):+.2f}")
        else:
            out.update(search_yardstick_recipe="none of the candidates",
                       search_yardstick_vs_same="n/a")
    v1 = book.record("cpu")
    if v1 and v1.get("history"):
        hist = v1["history"]
        acc = [h["train_accuracy"] for h in hist]
        rose = all(b > a for a, b in itertools.pairwise(acc))
        out.update(cpu_v1_train_acc_last=f"{100 * hist[-1]['train_accuracy']:.1f}",
                   cpu_v1_val_acc_last=f"{100 * hist[-1]['val_accuracy']:.1f}",
                   cpu_v1_best_epoch=v1.get("best_epoch"), cpu_v1_epochs=len(hist),
                   cpu_v1_train_rose="rose every epoch" if rose else "did not rise every epoch")
    return out
