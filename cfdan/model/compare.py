"""Our measured size and cost beside the paper's Tables 2 and 5 (chapter 2).

Every function returns a DataFrame or a dict of plain numbers; the paper's numbers come from
:mod:`cfdan.paper` and sit in columns or rows labelled ``paper``, ours are measured with
:func:`cfdan.model.cost.measure` (MACs, see :mod:`cfdan.model.cost`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cfdan import paper

from .config import PRESETS, CFDANConfig, preset
from .cost import Cost, attention_cost, measure

OURS = "ours (measured)"

ATTENTION_VARIANTS: dict[str, dict[str, Any]] = {
    "grouped + distilled (ours)": {},
    "grouped, no distillation": dict(distill=False),
    "no grouping, distilled": dict(spatial_window=None, channel_groups=1),
    "no grouping, no distillation": dict(spatial_window=None, channel_groups=1, distill=False),
}
"""Field overrides of the ``full`` preset compared in the attention-cost curve."""

GRIDS = (4, 5, 6, 7, 8, 10, 12, 14)
"""Token-grid sides of the attention-cost curve (49 tokens = the 7 x 7 grid at 224 px)."""


def part_summary(cost: Mapping[str, Cost]) -> pd.DataFrame:
    """Parameters (M) and GMACs of the whole model and of each part of :func:`measure`."""
    return pd.DataFrame([{"part": k, "params (M)": v.params_m, "GFLOPs (MACs)": v.gmacs}
                         for k, v in cost.items()])


def table2(cost: Mapping[str, Cost]) -> pd.DataFrame:
    """Table 2's size and cost columns (paper rows) with our measured model as the last row."""
    rows = paper.table("table2")[["source", "method", "params_M", "FLOPs_G"]]
    ours = pd.DataFrame([{"source": OURS, "method": "CF-DAN (this reproduction)",
                          "params_M": cost["total"].params_m, "FLOPs_G": cost["total"].gmacs}])
    return pd.concat([rows, ours], ignore_index=True)


def table2_gap(cost: Mapping[str, Cost], tolerance_pct: float = 5.0) -> pd.DataFrame:
    """Our total parameters and MACs against the paper's CF-DAN row of Table 2, in percent."""
    rows = []
    for what, ours, column in [("params (M)", cost["total"].params_m, "params_M"),
                               ("FLOPs (G)", cost["total"].gmacs, "FLOPs_G")]:
        ref = paper.value("table2", column)
        gap = 100 * (ours / ref - 1)
        rows.append({"quantity": what, "ours": ours, "paper": ref, "gap %": gap,
                     f"within {tolerance_pct:g} %": abs(gap) < tolerance_pct})
    return pd.DataFrame(rows)


def table5(image_size: int = 224) -> pd.DataFrame:
    """Table 5's cost columns: the attention part of each preset, paper beside ours."""
    rows = []
    for method, name, *_acc, p_params, p_flops in paper.TABLE5:
        c = measure(preset(name, image_size=image_size))["attention"]
        rows.append({"method": method, "preset": name,
                     "paper params (M)": p_params, "ours params (M)": c.params_m,
                     "paper FLOPs (G)": p_flops, "ours FLOPs (G)": c.gmacs,
                     "params gap %": 100 * (c.params_m / p_params - 1),
                     "FLOPs gap %": 100 * (c.gmacs / p_flops - 1)})
    return pd.DataFrame(rows)


def distillation_saving(t5: pd.DataFrame, image_size: int = 224) -> dict[str, float]:
    """Fraction of the attention MACs that distillation saves: the paper's, ours, and ours
    with the other reading (``distill_position="post"``, distil after projecting)."""
    by = t5.set_index("preset")
    post = measure(preset("full", image_size=image_size, distill_position="post"))["attention"]
    ours_without = by.loc["no_distill", "ours FLOPs (G)"]
    return {
        "paper": float(1 - by.loc["full", "paper FLOPs (G)"]
                       / by.loc["no_distill", "paper FLOPs (G)"]),
        "ours": float(1 - by.loc["full", "ours FLOPs (G)"] / ours_without),
        "ours_post": float(1 - post.gmacs / ours_without),
    }


def distillation_extra_params(t5: pd.DataFrame) -> float:
    """Parameters (M) that our distillation adds to the attention part (:func:`table5` rows
    ``full`` minus ``no_distill``)."""
    by = t5.set_index("preset")["ours params (M)"]
    return float(by["full"] - by["no_distill"])


def attention_cost_curve(grids: Sequence[int] = GRIDS,
                         variants: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """GMACs of the dual-attention stack per variant and number of tokens (long format)."""
    variants = ATTENTION_VARIANTS if variants is None else variants
    return pd.DataFrame([
        {"variant": v, "tokens": g * g, "GFLOPs": attention_cost(preset("full", **kw), g).gmacs}
        for v, kw in variants.items() for g in grids
    ])


def plot_attention_cost(ax, curve: pd.DataFrame, mark_tokens: int | None = 49) -> None:
    """One line per variant of :func:`attention_cost_curve`; a dotted line at ``mark_tokens``."""
    for v, d in curve.groupby("variant", sort=False):
        ax.plot(d.tokens, d.GFLOPs, marker="o", label=v)
    if mark_tokens is not None:
        ax.axvline(mark_tokens, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="tokens P (grid side squared)", ylabel="attention GFLOPs (MACs)",
           title="Cost of the dual-attention stack")
    ax.legend(fontsize=8)


def preset_table(image_size: int = 224, presets: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> pd.DataFrame:
    """Every named preset: its field overrides, parameters (M) and GMACs at ``image_size``."""
    rows = []
    for name, over in (PRESETS if presets is None else presets).items():
        c = measure(preset(name, image_size=image_size))["total"]
        rows.append({"preset": name,
                     "overrides": ", ".join(f"{k}={v}" for k, v in over.items()) or "-",
                     "params (M)": c.params_m, "GFLOPs": c.gmacs})
    return pd.DataFrame(rows)


def design_numbers(cfg: CFDANConfig, cost: Mapping[str, Cost]) -> dict[str, float]:
    """The numbers behind the design choices of chapter 2, computed rather than typed.

    Counts follow from ``cfg`` (token width C, grid, pooling); ``*_measured`` from ``cost``;
    ``paper_*`` are the paper's Tables 2 and 5 and the arithmetic the chapter does on them.
    """
    c, tokens = cfg.dim, cfg.grid ** 2
    kv_grid = math.ceil(cfg.grid / cfg.distill_pool)  # ceil-mode pooling of the token grid
    blocks = 2 * cfg.num_layers  # a spatial and a channel block per layer
    projections = 4 * blocks  # Q, K, V and output projection of each block
    full = ("full", "preset")
    return {
        "image_size": cfg.image_size,
        "dim": c,
        "grid": cfg.grid,
        "tokens": tokens,
        "distill_pool": cfg.distill_pool,
        "kv_grid": kv_grid,
        "kv_tokens": kv_grid ** 2,
        "attention_blocks": blocks,
        "projections": projections,
        "projection_params_M": projections * c * c / 1e6,
        "projection_gmacs": projections * tokens * c * c / 1e9,
        "dense_conv3_params_M": 9 * c * (c // cfg.distill_reduction) / 1e6,
        "mlp4_params_M": 2 * 4 * c * c / 1e6,
        "total_params_M_measured": cost["total"].params_m,
        "total_gmacs_measured": cost["total"].gmacs,
        "trunk_params_M_measured": cost["trunk"].params_m,
        "trunk_gmacs_measured": cost["trunk"].gmacs,
        "attention_gmacs_measured": cost["attention"].gmacs,
        "ilm_params_M_measured": cost["ilm"].params_m,
        "paper_params_M": paper.value("table2", "params_M"),
        "paper_gflops": paper.value("table2", "FLOPs_G"),
        "paper_attention_params_M": paper.value("table5", "params_M", *full),
        "paper_attention_params_M_no_distill": paper.value("table5", "params_M", "no_distill",
                                                           "preset"),
        "paper_attention_gflops": paper.value("table5", "FLOPs_G", *full),
        "paper_attention_gflops_no_distill": paper.value("table5", "FLOPs_G", "no_distill",
                                                         "preset"),
        "paper_distill_extra_params_M": (paper.value("table5", "params_M", *full)
                                         - paper.value("table5", "params_M", "no_distill",
                                                       "preset")),
        # Table 2 minus the attention (Table 5) and our ILM: what the paper leaves for a trunk
        "paper_trunk_params_M": (paper.value("table2", "params_M")
                                 - paper.value("table5", "params_M", *full)
                                 - cost["ilm"].params_m),
        "paper_trunk_gflops": (paper.value("table2", "FLOPs_G")
                               - paper.value("table5", "FLOPs_G", *full)),
    }
