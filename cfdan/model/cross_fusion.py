"""Cross-fusion dual attention (§3.2, eq. 3, Fig. 2): stacked spatial/channel layers.

Layer l+1 computes A_s^{l+1} = A_s(Q_s^l, K_c^l, V_s^l) and A_c^{l+1} = A_c(Q_c^l, K_s^l, V_c^l):
each branch keeps its own queries and values and takes the *other* branch's keys, i.e. the
key K_c^l is the channel block's key projection of the channel output (and vice versa). In the
first layer both branches read the trunk tokens, so the exchange is a no-op there.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import ChannelGroupAttention, SpatialGroupAttention
from .config import CFDANConfig


class DualAttention(nn.Module):
    """``num_layers`` layers of parallel spatial and channel attention (DAM, §3.1)."""

    def __init__(self, cfg: CFDANConfig) -> None:
        super().__init__()
        self.cross_fusion = cfg.cross_fusion and cfg.attention == "dual"
        use_s = cfg.attention in ("dual", "spatial")
        use_c = cfg.attention in ("dual", "channel")
        self.spatial = nn.ModuleList(
            SpatialGroupAttention(cfg.dim, cfg.spatial_window, cfg.spatial_heads, cfg.distill,
                                  cfg.distill_position, cfg.distill_pool, cfg.distill_reduction,
                                  cfg.norm, cfg.closed_loop)
            for _ in range(cfg.num_layers if use_s else 0))
        self.channel = nn.ModuleList(
            ChannelGroupAttention(cfg.dim, cfg.channel_groups, cfg.distill,
                                  cfg.distill_reduction, cfg.norm, cfg.closed_loop)
            for _ in range(cfg.num_layers if use_c else 0))

    def forward(self, x: torch.Tensor, hw: tuple[int, int], need_weights: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, list[torch.Tensor]]]:
        """Return the last spatial output, the last channel output and per-layer weights."""
        s = x if len(self.spatial) else None
        c = x if len(self.channel) else None
        weights: dict[str, list[torch.Tensor]] = {"spatial": [], "channel": []}
        for layer in range(max(len(self.spatial), len(self.channel))):
            exchange = self.cross_fusion and layer > 0
            branches = (("spatial", s, c, self.spatial, self.channel),
                        ("channel", c, s, self.channel, self.spatial))
            out: dict[str, torch.Tensor | None] = {}
            for name, own, other, blocks, other_blocks in branches:
                if own is None:
                    out[name] = None
                    continue
                if exchange:  # K from the other branch's output and key projection (eq. 3)
                    out[name], w = blocks[layer](own, other, hw, k_proj=other_blocks[layer].k,
                                                 need_weights=need_weights)
                else:
                    out[name], w = blocks[layer](own, own, hw, need_weights=need_weights)
                if w is not None:
                    weights[name].append(w)
            s, c = out["spatial"], out["channel"]
        return s, c, weights
