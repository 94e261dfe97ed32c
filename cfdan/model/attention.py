"""Grouped self-attention in the spatial (eq. 1) and channel (eq. 2) dimensions (§3.1).

Both blocks take the tokens that give Q and V (their own branch) and the tokens that give K
(their own branch, or the other branch under cross-fusion, eq. 3) together with the key
projection to apply to them, so that cross-fusion can exchange keys between branches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .distillation import ChannelDistill, SpatialDistill


class SpatialGroupAttention(nn.Module):
    """Eq. (1): A_s = Concat_g A*(Q_g, K_g, V_g) over N_g windows of the token grid.

    A group is a ``window`` x ``window`` block of grid cells (the grid is zero-padded to a
    multiple of it and padded keys are masked); ``window=None`` is one group (no grouping).
    With distillation (eq. 4) K and V come from the max-pooled grid, whose
    ``window / pool`` blocks align with the query windows.
    """

    def __init__(self, dim: int, window: int | None, heads: int = 1, distill: bool = True,
                 distill_position: str = "pre", pool: int = 2, reduction: int = 2,
                 norm: bool = True, closed_loop: bool = True) -> None:
        super().__init__()
        self.dim, self.window, self.heads = dim, window, heads
        self.pool = pool
        self.distill_position = distill_position
        self.closed_loop = closed_loop
        self.norm_qv = nn.LayerNorm(dim) if norm else nn.Identity()
        self.norm_k = nn.LayerNorm(dim) if norm else nn.Identity()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.dist_k = SpatialDistill(dim, reduction, pool) if distill else None
        self.dist_v = SpatialDistill(dim, reduction, pool) if distill else None

    def _kv(self, h: torch.Tensor, proj: nn.Linear, dist: SpatialDistill | None,
            hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if dist is None:
            return proj(h), hw
        if self.distill_position == "pre":  # distil, then project from fewer tokens
            t, khw = dist(h, hw)
            return proj(t), khw
        return dist(proj(h), hw)

    def forward(self, x: torch.Tensor, x_k: torch.Tensor, hw: tuple[int, int],
                k_proj: nn.Linear | None = None, need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the block output (N, P, C) and the attention weights (None unless
        ``need_weights``: the fused kernel then computes the same output without them).

        ``k_proj`` is the key projection to use (the other branch's under cross-fusion).
        """
        h = self.norm_qv(x)
        q = self.q(h)
        k, khw = self._kv(self.norm_k(x_k), k_proj or self.k, self.dist_k, hw)
        v, _ = self._kv(h, self.v, self.dist_v, hw)
        out, weights = self._attend(q, hw, k, v, khw, need_weights)
        out = self.o(out)
        return (out + x if self.closed_loop else out), weights

    def _attend(self, q: torch.Tensor, hw: tuple[int, int], k: torch.Tensor, v: torch.Tensor,
                khw: tuple[int, int], need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, p, c = q.shape
        heads, d = self.heads, c // self.heads
        if self.window is None:
            qw, kw, vw = (t.reshape(n, 1, t.shape[1], heads, d) for t in (q, k, v))
            mask = None
            nh = nw = 1
            wq = 0
        else:
            wq = self.window
            wk = wq // self.pool if khw != hw else wq
            nh, nw = -(-hw[0] // wq), -(-hw[1] // wq)
            qw, _ = windows(q, hw, wq, nh, nw)
            kw, mask = windows(k, khw, wk, nh, nw)
            vw, _ = windows(v, khw, wk, nh, nw)
            qw, kw, vw = (t.reshape(*t.shape[:3], heads, d) for t in (qw, kw, vw))
        # (N, windows, L, heads, d) -> (N, windows, heads, L, d)
        qw, kw, vw = (t.transpose(2, 3) for t in (qw, kw, vw))
        if need_weights:
            scores = (qw @ kw.transpose(-1, -2)) * (1.0 / math.sqrt(d))
            if mask is not None:
                scores = scores.masked_fill(~mask[None, :, None, None, :], float("-inf"))
            weights = scores.softmax(dim=-1)
            out = weights @ vw
        elif exporting():  # ONNX takes 4-D only: windows folded into the batch
            weights = None
            g, lk = kw.shape[1], kw.shape[3]
            m4 = None if mask is None else mask[None].expand(n, g, lk).reshape(n * g, 1, 1, lk)
            out = F.scaled_dot_product_attention(
                *(t.reshape(n * g, *t.shape[2:]) for t in (qw, kw, vw)), attn_mask=m4
            ).reshape(qw.shape)
        else:  # the same attention, fused (scale 1/sqrt(d) is the kernel's default)
            weights = None
            out = F.scaled_dot_product_attention(
                qw, kw, vw, attn_mask=None if mask is None else mask[None, :, None, None, :])
        out = out.transpose(2, 3).reshape(n, nh * nw, -1, c)
        if self.window is None:
            return out.reshape(n, p, c), weights
        return _unwindow(out, hw, wq, nh, nw), weights


def exporting() -> bool:
    """True while ``torch.onnx.export`` / ``torch.export`` traces the model. Only then does the
    fused attention fold its windows into the batch (4-D, which ONNX requires): on CPU the 4-D
    call takes another kernel than the 5-D one and differs in the last bits (about 1e-7), so
    training and the stored results keep the 5-D call."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def windows(t: torch.Tensor, hw: tuple[int, int], w: int, nh: int, nw: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H*W, C) -> (N, nh*nw, w*w, C) zero-padded windows, and the validity mask."""
    n, _, c = t.shape
    g = t.reshape(n, hw[0], hw[1], c)
    ph, pw = nh * w - hw[0], nw * w - hw[1]
    valid = torch.ones(hw, dtype=torch.bool, device=t.device)
    if ph or pw:
        g = F.pad(g, (0, 0, 0, pw, 0, ph))
        valid = F.pad(valid, (0, pw, 0, ph), value=False)
    g = g.reshape(n, nh, w, nw, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, nh * nw, w * w, c)
    valid = valid.reshape(nh, w, nw, w).permute(0, 2, 1, 3).reshape(nh * nw, w * w)
    return g, valid


def _unwindow(t: torch.Tensor, hw: tuple[int, int], w: int, nh: int, nw: int) -> torch.Tensor:
    """Inverse of :func:`windows` for queries: (N, nh*nw, w*w, C) -> (N, H*W, C)."""
    n, _, _, c = t.shape
    g = t.reshape(n, nh, nw, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, nh * w, nw * w, c)
    return g[:, : hw[0], : hw[1]].reshape(n, hw[0] * hw[1], c)


class ChannelGroupAttention(nn.Module):
    """Eq. (2): A_c = Concat_w A*(Q_w, K_w, V_w) over N_w groups of C_w channels.

    Inside a group the channels attend to each other across all P positions (global
    interaction): weights softmax(tau_w * q_hat^T k_hat) of size C_w x C_w' with Q and K
    L2-normalised along the positions and a learnable temperature per group (as in XCiT;
    the paper gives no scale). Distillation (eq. 5) shrinks K and V to C_w' = C_w / r channels.
    """

    def __init__(self, dim: int, groups: int, distill: bool = True, reduction: int = 2,
                 norm: bool = True, closed_loop: bool = True) -> None:
        super().__init__()
        self.dim, self.groups = dim, groups
        self.closed_loop = closed_loop
        self.norm_qv = nn.LayerNorm(dim) if norm else nn.Identity()
        self.norm_k = nn.LayerNorm(dim) if norm else nn.Identity()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.temperature = nn.Parameter(torch.ones(groups))
        self.dist_k = ChannelDistill(dim, groups, reduction) if distill else None
        self.dist_v = ChannelDistill(dim, groups, reduction) if distill else None

    def forward(self, x: torch.Tensor, x_k: torch.Tensor, hw: tuple[int, int],
                k_proj: nn.Linear | None = None, need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n, p, c = x.shape
        g = self.groups
        h = self.norm_qv(x)
        q = self.q(h)
        k = (k_proj or self.k)(self.norm_k(x_k))
        v = self.v(h)
        if self.dist_k is not None:
            k, v = self.dist_k(k), self.dist_v(v)
        # (N, P, G*Cw) -> (N, G, P, Cw)
        q, k, v = (t.reshape(n, p, g, -1).transpose(1, 2) for t in (q, k, v))
        q, k = F.normalize(q, dim=2), F.normalize(k, dim=2)
        scores = (q.transpose(-1, -2) @ k) * self.temperature.view(1, g, 1, 1)  # (N,G,Cw,Cw')
        weights = scores.softmax(dim=-1)
        out = (v @ weights.transpose(-1, -2)).transpose(1, 2).reshape(n, p, c)
        out = self.o(out)
        return (out + x if self.closed_loop else out), weights
