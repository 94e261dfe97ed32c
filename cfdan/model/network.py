"""CF-DAN (Fig. 2): trunk -> tokens (+ positions) -> cross-fusion dual attention -> ILM -> head."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .config import CFDANConfig
from .cross_fusion import DualAttention
from .ilm import Fusion
from .trunk import ResNetTrunk, load_pretrained


def component_seed(init_seed: int, name: str) -> int:
    """The seed of component ``name``'s initial weights under paired initialisation."""
    digest = hashlib.sha256(f"{init_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


@contextmanager
def _init_rng(init_seed: int | None, name: str) -> Iterator[None]:
    """Draw the weights built inside from ``(init_seed, name)``; global RNG when None."""
    if init_seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(component_seed(init_seed, name))
        yield


class CFDAN(nn.Module):
    """The cross-fusion dual-attention network; ``forward`` returns logits (N, num_classes).

    ``init_seed`` (not part of the architecture) pairs ablation variants: when given, each
    component (trunk, positions, attention, fusion, head) draws its initial weights from its
    own generator seeded by ``(init_seed, component)``, so two variants built with the same
    seed start from identical weights in every component they share. ``None`` draws everything
    from torch's global generator in construction order.
    """

    def __init__(self, cfg: CFDANConfig | None = None, init_seed: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CFDANConfig()
        with _init_rng(init_seed, "trunk"):
            self.trunk = ResNetTrunk(cfg.trunk_width, cfg.trunk_blocks, cfg.trunk_stem,
                                     cfg.in_chans)
        if cfg.pretrained:
            load_pretrained(self.trunk, cfg.pretrained)
        self.grid = (cfg.grid, cfg.grid)
        self.pos_embed = (nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.dim))
                          if cfg.pos_embed else None)
        if self.pos_embed is not None:
            with _init_rng(init_seed, "pos_embed"):
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
        with _init_rng(init_seed, "attention"):
            self.attention = DualAttention(cfg)
        with _init_rng(init_seed, "fusion"):
            self.fusion = Fusion(cfg) if cfg.attention == "dual" else None
        with _init_rng(init_seed, "head"):
            self.head_norm = nn.LayerNorm(cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)
            self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Trunk feature map reshaped to P x C tokens (§3.1), with positional coding."""
        f = self.trunk(x)
        hw = (f.shape[-2], f.shape[-1])
        t = f.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            if t.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(
                    f"input of {x.shape[-2]}x{x.shape[-1]} px gives a {hw[0]}x{hw[1]} grid; the "
                    f"model was built for image_size={self.cfg.image_size} ({self.grid} grid)")
            t = t + self.pos_embed
        return t, hw

    def forward(self, x: torch.Tensor, return_features: bool = False,
                return_attention: bool = False) -> Any:
        t, hw = self.tokens(x)
        a_s, a_c, weights = self.attention(t, hw, need_weights=return_attention)
        if self.fusion is not None:
            fused = self.fusion(a_s, a_c)
        elif a_s is not None or a_c is not None:
            fused = a_s if a_s is not None else a_c
        else:  # attention="none": the trunk's tokens go straight to the head
            fused = t
        features = self.head_norm(fused.mean(dim=1))
        logits = self.head(self.dropout(features))
        if not (return_features or return_attention):
            return logits
        out: dict[str, Any] = {"logits": logits}
        if return_features:
            out["features"] = features
        if return_attention:
            out["attention"] = attention_maps(a_s, a_c, fused, hw, weights)
        return out


def _energy(t: torch.Tensor | None, hw: tuple[int, int]) -> torch.Tensor | None:
    """Per-position L2 norm of a token map, min-max normalised per image: (N, H, W)."""
    if t is None:
        return None
    e = t.detach().float().norm(dim=-1).reshape(t.shape[0], *hw)
    lo = e.flatten(1).min(1).values[:, None, None]
    hi = e.flatten(1).max(1).values[:, None, None]
    return (e - lo) / (hi - lo).clamp_min(1e-12)


def attention_maps(a_s: torch.Tensor | None, a_c: torch.Tensor | None, fused: torch.Tensor,
                   hw: tuple[int, int], weights: dict[str, list[torch.Tensor]]
                   ) -> dict[str, Any]:
    """Maps for Fig. 8: per-position response of the spatial branch, the channel branch and
    the fused (ILM) features, each (N, H, W) in [0, 1], plus the raw attention weights of every
    layer (``spatial_weights``: (N, windows, heads, Lq, Lk); ``channel_weights``: (N, G, Cw, Cw'))."""
    return {
        "spatial": _energy(a_s, hw),
        "channel": _energy(a_c, hw),
        "fused": _energy(fused, hw),
        "spatial_weights": [w.detach() for w in weights["spatial"]],
        "channel_weights": [w.detach() for w in weights["channel"]],
    }
