"""Interactive learning mechanism (§3.4, eqs. 13-16, Fig. 3) and the activation switch.

    CA(X)          = act(Linear(GAP(X)))                       (13)
    CAM(X)         = CA(X) x X                                 (14)
    INTA(X_A, X_B) = act(Linear(CA(X_A))) x CBM(X_B)           (15)
    ILM(A_s, A_c)  = INTA(A_s, A_c) + INTA(A_c, A_s)           (16)

"CBM" is never defined in the paper; we read it as CAM (eq. 14), reusing X_B's own CA, the
nearest defined term; ``cbm="identity"`` is the alternative reading (INTA gates X_B itself).
Both reuse values already computed, so parameters and FLOPs cannot tell them apart (chapter 2).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CFDANConfig


def make_activation(cfg: CFDANConfig) -> nn.Module:
    """The activation of eqs. (13)/(15): PCP (§3.4) or Sigmoid / ReLU / Tanh (Table 4)."""
    if cfg.activation == "pcp":
        from cfdan.pcp import PCP

        return PCP(cfg.pcp_x_L, cfg.pcp_P1, cfg.pcp_s_L, learnable=cfg.pcp_learnable)
    return {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}[cfg.activation]()


class ChannelAttention(nn.Module):
    """Eq. (13): CA(X) = act(Linear(GAP(X))), X of shape (N, P, C) -> (N, C)."""

    def __init__(self, dim: int, act: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x.mean(dim=1)))


class Fusion(nn.Module):
    """Fuse the spatial and channel branches: ILM (eq. 16), per-branch CAM (eq. 14) or sum."""

    def __init__(self, cfg: CFDANConfig) -> None:
        super().__init__()
        self.mode, self.cbm = cfg.fusion, cfg.cbm
        self.act = make_activation(cfg)  # one activation, shared (learnable PCP has 3 params)
        if self.mode in ("ilm", "cam"):
            self.ca_s = ChannelAttention(cfg.dim, self.act)
            self.ca_c = ChannelAttention(cfg.dim, self.act)
        if self.mode == "ilm":
            self.inta_s = nn.Linear(cfg.dim, cfg.dim)  # Linear of INTA(A_s, A_c)
            self.inta_c = nn.Linear(cfg.dim, cfg.dim)  # Linear of INTA(A_c, A_s)

    def forward(self, a_s: torch.Tensor, a_c: torch.Tensor) -> torch.Tensor:
        if self.mode == "sum":
            return a_s + a_c
        ca_s, ca_c = self.ca_s(a_s), self.ca_c(a_c)
        cam_s, cam_c = ca_s[:, None] * a_s, ca_c[:, None] * a_c  # eq. (14)
        if self.mode == "cam":
            return cam_s + cam_c
        cbm_s, cbm_c = (cam_s, cam_c) if self.cbm == "cam" else (a_s, a_c)
        inta_sc = self.act(self.inta_s(ca_s))[:, None] * cbm_c  # eq. (15), INTA(A_s, A_c)
        inta_cs = self.act(self.inta_c(ca_c))[:, None] * cbm_s  # INTA(A_c, A_s)
        return inta_sc + inta_cs  # eq. (16)
