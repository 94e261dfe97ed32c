"""The paper's own numbers, quoted verbatim from its tables (never mixed with ours).

Every frame here carries ``source="paper"``; notebooks show them beside our measured rows.
"""

from __future__ import annotations

import pandas as pd

PAPER = "paper"
CFDAN = "CF-DAN (Ours)"
"""The paper's name for its own model in Tables 1 and 2."""

TABLE1 = [  # accuracy (%) on RAF-DB, AffectNet, FERPlus
    ("SCN", "CVPR 2020", 87.03, 60.23, 89.39),
    ("RAN", "TIP 2020", 86.90, None, 89.16),
    ("EfficientFace", "AAAI 2021", 88.36, 59.89, None),
    ("DMUE", "CVPR 2021", 89.42, None, None),
    ("FDRL", "CVPR 2021", 89.47, None, None),
    ("DAN", "arXiv 2021", 89.70, 62.09, None),
    ("ARM", "arXiv 2021", 90.42, 61.33, None),
    ("CSGResNet", "ICASSP 2022", 88.59, 61.03, 88.94),
    ("AMP-Net", "TCSVT 2022", 89.19, 61.32, 89.37),
    ("POSTER", "arXiv 2022", 92.05, 63.34, 91.62),
    ("CF-DAN (Ours)", "-", 92.78, 63.58, 92.02),
]

TABLE2 = [  # params (M), FLOPs (G), accuracy RAF-DB, FERPlus
    ("CVT", "arXiv 2021", 80.1, None, 87.61, 88.81),
    ("DMUE", "CVPR 2021", 78.4, 13.4, 89.42, None),
    ("TransFER", "ICCV 2021", 65.2, 15.3, 90.91, 90.83),
    ("POSTER", "arXiv 2022", 71.8, 15.7, 92.05, 91.62),
    ("DAN", "arXiv 2021", 28.3, 2.6, 89.70, None),
    ("CF-DAN (Ours)", "-", 16.4, 2.0, 92.78, 92.02),
]

TABLE3 = [  # accuracy (%) AffectNet, FERPlus, RAF-DB; preset name of our reproduction
    ("Baseline", "baseline", 59.73, 89.69, 90.37),
    ("Baseline+DAM", "dam", 60.44, 90.92, 90.88),
    ("Baseline+DAM+ILM", "dam_ilm", 63.12, 91.55, 91.63),
    ("Baseline+cross-fusion DAM+ILM", "full", 63.58, 92.02, 92.78),
]

TABLE4 = [  # RAF-DB accuracy (%): activation, ILM on?, preset
    ("PCP", False, "act_pcp_no_ilm", 92.54),
    ("PCP", True, "act_pcp", 92.78),
    ("Sigmoid", False, "act_sigmoid_no_ilm", 91.42),
    ("Sigmoid", True, "act_sigmoid", 91.78),
    ("ReLU", False, "act_relu_no_ilm", 91.98),
    ("ReLU", True, "act_relu", 92.26),
    ("Tanh", False, "act_tanh_no_ilm", 91.75),
    ("Tanh", True, "act_tanh", 91.97),
]

TABLE5 = [  # AffectNet, FERPlus accuracy (%), attention params (M), attention FLOPs (G)
    ("without distillation", "no_distill", 63.34, 91.87, 4.2, 0.21),
    ("with distillation", "full", 63.58, 92.02, 4.22, 0.14),
]

IMAGE_SIZE = 224  # §4.2: faces resized to 224 x 224
BEST_PCP = {"x_L": 0.19, "P1": -0.24, "s_L": 1.85}  # §4.5
FIG10_GRID = {"s_L": (1.75, 1.85, 1.95), "x_L": (0.19, 0.2, 0.21),
              "P1": (-0.23, -0.24, -0.25, -0.26, -0.27)}  # §4.5


COLUMNS = {
    "table1": ["method", "venue", "RAF-DB", "AffectNet", "FERPlus"],
    "table2": ["method", "venue", "params_M", "FLOPs_G", "RAF-DB", "FERPlus"],
    "table3": ["method", "preset", "AffectNet", "FERPlus", "RAF-DB"],
    "table4": ["activation", "ILM", "preset", "RAF-DB"],
    "table5": ["method", "preset", "AffectNet", "FERPlus", "params_M", "FLOPs_G"],
}
"""Column names of each table; :data:`KEY_COLUMNS` name rows, every other column is a number."""

KEY_COLUMNS = ("source", "method", "venue", "preset", "activation", "ILM")
"""Columns that identify a row rather than hold a number the paper measured."""

_ROWS = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "table5": TABLE5}


def table(name: str) -> pd.DataFrame:
    """One of the paper's tables as a DataFrame with a ``source`` column set to ``"paper"``."""
    if name not in _ROWS:
        raise ValueError(f"unknown paper table {name!r}; choose from {sorted(_ROWS)}")
    df = pd.DataFrame(_ROWS[name], columns=COLUMNS[name])
    df.insert(0, "source", PAPER)
    return df


def value_columns(name: str) -> list[str]:
    """The columns of table ``name`` that hold the paper's numbers (accuracies, sizes, costs)."""
    table(name)  # validates the name
    return [c for c in COLUMNS[name] if c not in KEY_COLUMNS]


def value(name: str, column: str, key: str = CFDAN, by: str = "method") -> float:
    """One number of a paper table: the ``column`` of the row whose ``by`` column is ``key``."""
    df = table(name)
    if column not in value_columns(name):
        raise KeyError(f"{name} has no number column {column!r}; choose from {value_columns(name)}")
    rows = df[df[by] == key]
    if len(rows) != 1:
        raise KeyError(f"{name}: {len(rows)} rows with {by} == {key!r}")
    return float(rows[column].iloc[0])


def label_columns(df: pd.DataFrame, name: str, prefix: str = f"{PAPER} ") -> pd.DataFrame:
    """``df`` with every column of table ``name`` that holds a paper number renamed ``"paper X"``.

    Columns already carrying the label are left as they are, so the call is idempotent.
    """
    numbers = set(value_columns(name))
    return df.rename(columns={c: f"{prefix}{c}" for c in df.columns if c in numbers})
