"""Parameter and FLOP counts (Tables 2 and 5), measured with ``torch.utils.flop_counter``.

FLOPs here follow the convention of the FER literature (and of fvcore): one fused
multiply-add counts once, i.e. we report MACs = ``FlopCounterMode`` FLOPs / 2. Only
convolutions and matrix products are counted (element-wise ops, softmax and norms are not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import CFDANConfig
from .network import CFDAN

PARTS = {
    "trunk": ("trunk",),
    "attention": ("attention",),
    "ilm": ("fusion",),
    "head": ("head", "head_norm", "pos_embed"),
}
"""Named parts of :class:`CFDAN`, each the attribute names of its sub-modules/parameters."""


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(module: nn.Module | nn.Parameter | None) -> int:
    if module is None:
        return 0
    if isinstance(module, nn.Parameter):
        return module.numel()
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def measure(cfg: CFDANConfig, batch: int = 1) -> dict[str, Cost]:
    """Params and MACs per image of the whole model and of each part in :data:`PARTS`."""
    model = CFDAN(cfg).eval()
    x = torch.randn(batch, cfg.in_chans, cfg.image_size, cfg.image_size)
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        model(x)
    per_module = counter.get_flop_counts()
    total_flops = counter.get_total_flops()

    def flops_of(name: str) -> int:
        key = f"CFDAN.{name}"
        return int(sum(per_module.get(key, {}).values()))

    out = {"total": Cost(count_params(model), total_flops // 2 // batch)}
    for part, names in PARTS.items():
        params = sum(count_params(getattr(model, n, None)) for n in names)
        flops = sum(flops_of(n) for n in names)
        out[part] = Cost(params, flops // 2 // batch)
    return out


def cost_table(cfgs: dict[str, CFDANConfig]) -> list[dict[str, float | str]]:
    """Rows of (name, part, params in M, GMACs) for several configs, for the notebook."""
    rows: list[dict[str, float | str]] = []
    for name, cfg in cfgs.items():
        for part, c in measure(cfg).items():
            rows.append({"model": name, "part": part, "params_M": round(c.params_m, 3),
                         "GFLOPs(MAC)": round(c.gmacs, 4)})
    return rows


@torch.no_grad()
def attention_cost(cfg: CFDANConfig, grid: int) -> Cost:
    """Params and MACs of the dual-attention stack alone on a ``grid`` x ``grid`` token map."""
    from .cross_fusion import DualAttention

    att = DualAttention(cfg).eval()
    x = torch.randn(1, grid * grid, cfg.dim)
    counter = FlopCounterMode(display=False)
    with counter:
        att(x, (grid, grid))
    return Cost(count_params(att), counter.get_total_flops() // 2)
