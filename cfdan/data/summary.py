"""What the data chapter tabulates: class orders, recorded class counts, and their live check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cfdan import paths

COUNTS_RECORD = Path("data") / "ferplus_counts.json"
"""The FERPlus class counts written by ``python -m cfdan data check --record``, in the store."""


def class_orders() -> pd.DataFrame:
    """The class order of every reader, one column per dataset (index = label)."""
    from cfdan.data import affectnet, ferplus, rafdb, synthetic

    return pd.DataFrame({
        "FERPlus": pd.Series(ferplus.CLASS_NAMES),
        "RAF-DB": pd.Series(rafdb.CLASS_NAMES),
        "AffectNet (8)": pd.Series(affectnet.CLASS_NAMES),
        "synthetic": pd.Series(synthetic.CLASS_NAMES),
    }).fillna("")


def read_counts(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The recorded FERPlus counts (default: ``results/data/ferplus_counts.json``)."""
    path = Path(path) if path is not None else paths.results_dir() / COUNTS_RECORD
    return json.loads(path.read_text())


def counts_table(record: dict[str, Any]) -> pd.DataFrame:
    """Class counts per split (columns) with a ``total`` row, from a counts record."""
    counts = pd.DataFrame({s: v["class_counts"] for s, v in record["splits"].items()})
    counts.loc["total"] = counts.sum()
    return counts


def count_facts(record: dict[str, Any], prefix: str = "ferplus_") -> dict[str, int]:
    """Split sizes (``<prefix><split>_images``), class counts (``<prefix><split>_<class>``) and
    the side of the stored images (``<prefix>image_px``) of a counts record."""
    out = {}
    for split, v in record["splits"].items():
        out[f"{prefix}{split}_images"] = int(sum(v["class_counts"].values()))
        out.update({f"{prefix}{split}_{c}": int(n) for c, n in v["class_counts"].items()})
        if "image_shape" in v:
            out[f"{prefix}image_px"] = int(v["image_shape"][-1])
    return out


def live_counts_equal(root: str | os.PathLike[str], record: dict[str, Any],
                      cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether counting the dataset at ``root`` now gives the recorded class counts."""
    from cfdan.data.commands import check

    live = check(record.get("dataset", "ferplus"), str(root),
                 cache_dir=None if cache_dir is None else str(cache_dir))
    return all(live["splits"][s]["class_counts"] == v["class_counts"]
               for s, v in record["splits"].items())
